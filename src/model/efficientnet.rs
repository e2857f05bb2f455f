//! EfficientNet B0-B3 (Tan and Le 2019) as torchvision builds them: `features.0` (stem,
//! SiLU), `features.1..7` (stages of MBConv blocks: expansion, depthwise convolution,
//! squeeze-and-excitation with SiLU and a sigmoid gate, projection; row-wise stochastic
//! depth on the residual branch), `features.8` (the last 1x1 convolution); the new head
//! replaces `classifier.1` after torchvision's dropout.
//!
//! EfficientNetV2-S (Tan and Le 2021) the same way: its first three stages are FusedMBConv
//! blocks (one k x k convolution in place of expansion and depthwise, no SE), BatchNorm eps
//! 0.001, the last convolution 1280 wide at `features.7`.
//!
//! Flat layer list: 0 = stem, then every block in order, last = "last conv".

use tch::nn;
use tch::{Kind, Tensor};

use super::{Act, ConvBnAct, Gate, LayerInfo, Mode, Network, SqueezeExcite};

/// (fused, expansion, kernel, stride, input channels, output channels, blocks).
type Stage = (bool, i64, i64, i64, i64, i64, usize);

/// B0's stages, the paper's table 1 (B1-B3 scale them).
const B0: [Stage; 7] = [
    (false, 1, 3, 1, 32, 16, 1),
    (false, 6, 3, 2, 16, 24, 2),
    (false, 6, 5, 2, 24, 40, 2),
    (false, 6, 3, 2, 40, 80, 3),
    (false, 6, 5, 1, 80, 112, 3),
    (false, 6, 5, 2, 112, 192, 4),
    (false, 6, 3, 1, 192, 320, 1),
];

/// EfficientNetV2-S's stages, the paper's table 4.
const V2_S: [Stage; 6] = [
    (true, 1, 3, 1, 24, 24, 2),
    (true, 4, 3, 2, 24, 48, 4),
    (true, 4, 3, 2, 48, 64, 4),
    (false, 4, 3, 2, 64, 128, 6),
    (false, 6, 3, 1, 128, 160, 9),
    (false, 6, 3, 2, 160, 256, 15),
];

/// torchvision's `_make_divisible(v, 8)`.
fn divisible(v: f64) -> i64 {
    let new = (((v + 4.0) as i64) / 8 * 8).max(8);
    if (new as f64) < 0.9 * v { new + 8 } else { new }
}

/// A convolution (`p.0`), BatchNorm (`p.1`, epsilon `eps`) and, with `silu`, SiLU.
#[allow(clippy::too_many_arguments)]
fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64, silu: bool, eps: f64) -> ConvBnAct {
    let bn = nn::BatchNormConfig { eps, ..Default::default() };
    ConvBnAct::new(&p / 0, &p / 1, (cin, cout), k, stride, groups, bn, if silu { Act::Silu } else { Act::None })
}

/// An MBConv block (expansion, depthwise convolution, squeeze-and-excitation, projection)
/// or a FusedMBConv one (one k x k convolution, then the projection when it expands).
struct MbConv {
    convs: Vec<ConvBnAct>,
    /// Squeeze-and-excitation (`fc1`, `fc2`), applied before `convs[se_at]`.
    se: Option<SqueezeExcite>,
    se_at: usize,
    residual: bool,
    drop: f64,
}

impl MbConv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: nn::Path,
        (cin, cout): (i64, i64),
        expand: i64,
        k: i64,
        stride: i64,
        drop: f64,
        fused: bool,
        eps: f64,
    ) -> Self {
        let b = &p / "block";
        let exp = divisible((cin * expand) as f64);
        let residual = stride == 1 && cin == cout;
        if fused {
            let convs = if exp != cin {
                vec![conv(&b / 0, cin, exp, k, stride, 1, true, eps), conv(&b / 1, exp, cout, 1, 1, 1, false, eps)]
            } else {
                vec![conv(&b / 0, cin, cout, k, stride, 1, true, eps)]
            };
            return MbConv { convs, se: None, se_at: 0, residual, drop };
        }
        let mut convs = vec![];
        if exp != cin {
            convs.push(conv(&b / 0, cin, exp, 1, 1, 1, true, eps));
        }
        convs.push(conv(&b / convs.len(), exp, exp, k, stride, exp, true, eps));
        let se_at = convs.len();
        let se = SqueezeExcite::new(&b / se_at, exp, (cin / 4).max(1), Act::Silu, Gate::Sigmoid);
        convs.push(conv(&b / (se_at + 1), exp, cout, 1, 1, 1, false, eps));
        MbConv { convs, se: Some(se), se_at, residual, drop }
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut x = xs.shallow_clone();
        for (i, c) in self.convs.iter().enumerate() {
            if let Some(se) = &self.se
                && i == self.se_at
            {
                x = se.forward(&x);
            }
            x = c.forward(&x, mode);
        }
        if !self.residual {
            return x;
        }
        if mode.train() && self.drop > 0.0 {
            let keep = 1.0 - self.drop;
            let noise = Tensor::empty([x.size()[0], 1, 1, 1], (Kind::Float, x.device())).bernoulli_float_(keep);
            x *= (noise / keep).to_kind(xs.kind());
        }
        x + xs
    }
}

enum Layer {
    Conv(Box<ConvBnAct>),
    Block(Box<MbConv>),
}

pub(crate) struct EfficientNet {
    layers: Vec<Layer>,
    info: Vec<LayerInfo>,
    width: i64,
}

impl EfficientNet {
    /// A B variant with these width and depth multipliers (B0: 1.0 / 1.0, B1: 1.0 / 1.1,
    /// B2: 1.1 / 1.2, B3: 1.2 / 1.4); BatchNorm eps 1e-5 as torchvision's B0-B4.
    pub(crate) fn b(p: &nn::Path, width_mult: f64, depth_mult: f64) -> Self {
        Self::new(p, &B0, (width_mult, depth_mult), None, 1e-5)
    }

    /// EfficientNetV2-S: BatchNorm eps 0.001, the last convolution 1280 wide.
    pub(crate) fn v2_s(p: &nn::Path) -> Self {
        Self::new(p, &V2_S, (1.0, 1.0), Some(1280), 1e-3)
    }

    /// The network of `stages`, stochastic depth 0.2 over the blocks, the last convolution
    /// `last` wide (4 x its input when None).
    fn new(p: &nn::Path, stages: &[Stage], (width_mult, depth_mult): (f64, f64), last: Option<i64>, eps: f64) -> Self {
        let f = p / "features";
        let ch = |c: i64| divisible(c as f64 * width_mult);
        let stem = ch(stages[0].4);
        let mut layers = vec![Layer::Conv(Box::new(conv(&f / 0, 3, stem, 3, 2, 1, true, eps)))];
        let mut info =
            vec![LayerInfo { prefixes: vec!["features.0".into()], name: "stem".into(), has_batchnorm: true }];
        let repeats: Vec<usize> = stages.iter().map(|s| (s.6 as f64 * depth_mult).ceil() as usize).collect();
        let total: usize = repeats.iter().sum();
        let mut done = 0;
        for (s, (&(fused, t, k, stride, cin, cout, _), &n)) in stages.iter().zip(&repeats).enumerate() {
            let (cin, cout) = (ch(cin), ch(cout));
            for i in 0..n {
                let drop = 0.2 * done as f64 / total as f64;
                let (from, step) = if i == 0 { (cin, stride) } else { (cout, 1) };
                let block = MbConv::new(&f / (s + 1) / i, (from, cout), t, k, step, drop, fused, eps);
                layers.push(Layer::Block(Box::new(block)));
                info.push(LayerInfo {
                    prefixes: vec![format!("features.{}.{i}", s + 1)],
                    name: format!("stage {} block {i}", s + 1),
                    has_batchnorm: true,
                });
                done += 1;
            }
        }
        let last_in = ch(stages[stages.len() - 1].5);
        let width = last.unwrap_or(4 * last_in);
        let at = stages.len() + 1;
        layers.push(Layer::Conv(Box::new(conv(&f / at, last_in, width, 1, 1, 1, true, eps))));
        info.push(LayerInfo {
            prefixes: vec![format!("features.{at}")],
            name: "last conv".into(),
            has_batchnorm: true,
        });
        EfficientNet { layers, info, width }
    }
}

impl Network for EfficientNet {
    fn layers(&self) -> &[LayerInfo] {
        &self.info
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        match &self.layers[index] {
            Layer::Conv(c) => c.forward(xs, mode),
            Layer::Block(b) => b.forward(xs, mode),
        }
    }

    fn feature_dim(&self) -> i64 {
        self.width
    }
}
