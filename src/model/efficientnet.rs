//! EfficientNet B0-B3 (Tan and Le 2019) as torchvision builds them: `features.0` (stem,
//! SiLU), `features.1..7` (stages of MBConv blocks: expansion, depthwise convolution,
//! squeeze-and-excitation with SiLU and a sigmoid gate, projection; row-wise stochastic
//! depth on the residual branch), `features.8` (the last 1x1 convolution); the new head
//! replaces `classifier.1` after torchvision's dropout.
//!
//! Flat layer list: 0 = stem, then every MBConv block in order, last = "last conv".

use tch::nn;
use tch::{Kind, Tensor};

use super::{Act, ConvBnAct, LayerInfo, Mode, Network};

/// torchvision's default BatchNorm2d epsilon (B0-B4).
const BN_EPS: f64 = 1e-5;

/// (expansion, kernel, stride, input channels, output channels, blocks): the paper's table 1.
const STAGES: [(i64, i64, i64, i64, i64, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// torchvision's `_make_divisible(v, 8)`.
fn divisible(v: f64) -> i64 {
    let new = (((v + 4.0) as i64) / 8 * 8).max(8);
    if (new as f64) < 0.9 * v { new + 8 } else { new }
}

/// A convolution (`p.0`), BatchNorm (`p.1`) and, with `silu`, SiLU.
#[allow(clippy::too_many_arguments)]
fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64, silu: bool) -> ConvBnAct {
    let bn = nn::BatchNormConfig { eps: BN_EPS, ..Default::default() };
    ConvBnAct::new(&p / 0, &p / 1, (cin, cout), k, stride, groups, bn, if silu { Act::Silu } else { Act::None })
}

struct MbConv {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
    project: ConvBnAct,
    residual: bool,
    drop: f64,
}

impl MbConv {
    #[allow(clippy::too_many_arguments)]
    fn new(p: nn::Path, cin: i64, cout: i64, expand: i64, k: i64, stride: i64, drop: f64) -> Self {
        let b = &p / "block";
        let exp = divisible((cin * expand) as f64);
        let mut j = 0;
        let expand = (exp != cin).then(|| {
            j += 1;
            conv(&b / 0, cin, exp, 1, 1, 1, true)
        });
        let depthwise = conv(&b / j, exp, exp, k, stride, exp, true);
        let se = &b / (j + 1);
        let squeeze = (cin / 4).max(1);
        MbConv {
            expand,
            depthwise,
            fc1: nn::conv2d(&se / "fc1", exp, squeeze, 1, Default::default()),
            fc2: nn::conv2d(&se / "fc2", squeeze, exp, 1, Default::default()),
            project: conv(&b / (j + 2), exp, cout, 1, 1, 1, false),
            residual: stride == 1 && cin == cout,
            drop,
        }
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut x = match &self.expand {
            Some(e) => e.forward(xs, mode),
            None => xs.shallow_clone(),
        };
        x = self.depthwise.forward(&x, mode);
        let gate = x.adaptive_avg_pool2d([1, 1]).apply(&self.fc1).silu().apply(&self.fc2).sigmoid();
        x = self.project.forward(&(x * gate), mode);
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
    /// The B variant with these width and depth multipliers (B0: 1.0 / 1.0, B1: 1.0 / 1.1,
    /// B2: 1.1 / 1.2, B3: 1.2 / 1.4), stochastic depth 0.2 over the blocks.
    pub fn new(p: &nn::Path, width_mult: f64, depth_mult: f64) -> Self {
        let f = p / "features";
        let ch = |c: i64| divisible(c as f64 * width_mult);
        let stem = ch(STAGES[0].3);
        let mut layers = vec![Layer::Conv(Box::new(conv(&f / 0, 3, stem, 3, 2, 1, true)))];
        let mut info =
            vec![LayerInfo { prefixes: vec!["features.0".into()], name: "stem".into(), has_batchnorm: true }];
        let repeats: Vec<usize> = STAGES.iter().map(|s| (s.5 as f64 * depth_mult).ceil() as usize).collect();
        let total: usize = repeats.iter().sum();
        let mut done = 0;
        for (s, (&(t, k, stride, cin, cout, _), &n)) in STAGES.iter().zip(&repeats).enumerate() {
            let (cin, cout) = (ch(cin), ch(cout));
            for i in 0..n {
                let drop = 0.2 * done as f64 / total as f64;
                let (from, step) = if i == 0 { (cin, stride) } else { (cout, 1) };
                layers.push(Layer::Block(Box::new(MbConv::new(&f / (s + 1) / i, from, cout, t, k, step, drop))));
                info.push(LayerInfo {
                    prefixes: vec![format!("features.{}.{i}", s + 1)],
                    name: format!("stage {} block {i}", s + 1),
                    has_batchnorm: true,
                });
                done += 1;
            }
        }
        let last_in = ch(STAGES[6].4);
        let width = 4 * last_in;
        layers.push(Layer::Conv(Box::new(conv(&f / 8, last_in, width, 1, 1, 1, true))));
        info.push(LayerInfo { prefixes: vec!["features.8".into()], name: "last conv".into(), has_batchnorm: true });
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
