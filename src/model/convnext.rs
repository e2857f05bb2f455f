//! ConvNeXt (Liu et al. 2022), torchvision's layout and variable names: `features.0`
//! (the 4x4 patchify stem with its LayerNorm), `features.1/3/5/7` (the stages of CNBlocks:
//! 7x7 depthwise convolution, LayerNorm, Linear 4x, GELU, Linear, layer scale, stochastic
//! depth), `features.2/4/6` (downsampling: LayerNorm, 2x2 convolution of stride 2), and
//! `classifier.0` (the LayerNorm after pooling; the new head replaces `classifier.2`).
//!
//! Flat layer list: 0 = stem, then every block and every downsampling in order, and last
//! "head norm" (global pooling and `classifier.0`). No BatchNorm anywhere: LayerNorm has no
//! running statistics, so a frozen layer is simply one whose parameters do not train.

use tch::nn;
use tch::{Kind, Tensor};

use super::{LayerInfo, Mode, Network};

/// torchvision's LayerNorm epsilon for ConvNeXt.
const LN_EPS: f64 = 1e-6;

/// LayerNorm over the channels of an NCHW tensor (torchvision's `LayerNorm2d`).
struct LayerNorm2d {
    ln: nn::LayerNorm,
}

impl LayerNorm2d {
    fn new(p: nn::Path, dim: i64) -> Self {
        LayerNorm2d { ln: nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() }) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.permute([0, 2, 3, 1]).apply(&self.ln).permute([0, 3, 1, 2])
    }
}

struct Block {
    dwconv: nn::Conv2D,
    norm: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    layer_scale: Tensor,
    /// Stochastic depth: the probability that the block's branch is dropped for a sample.
    drop: f64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, drop: f64) -> Self {
        let b = &p / "block";
        let dw = nn::ConvConfig { padding: 3, groups: dim, ..Default::default() };
        Block {
            dwconv: nn::conv2d(&b / 0, dim, dim, 7, dw),
            norm: nn::layer_norm(&b / 2, vec![dim], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() }),
            fc1: nn::linear(&b / 3, dim, 4 * dim, Default::default()),
            fc2: nn::linear(&b / 5, 4 * dim, dim, Default::default()),
            layer_scale: p.var("layer_scale", &[dim, 1, 1], nn::Init::Const(1e-6)),
            drop,
        }
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Tensor {
        let y = x.apply(&self.dwconv).permute([0, 2, 3, 1]).apply(&self.norm).apply(&self.fc1).gelu("none");
        let y = y.apply(&self.fc2).permute([0, 3, 1, 2]) * &self.layer_scale;
        let y = if mode.train() && self.drop > 0.0 {
            // torchvision's stochastic_depth(mode = "row"): one Bernoulli draw per sample, kept
            // branches scaled by 1 / (1 - p).
            let keep = 1.0 - self.drop;
            let noise = Tensor::empty([y.size()[0], 1, 1, 1], (Kind::Float, y.device())).bernoulli_float_(keep);
            y * (noise / keep).to_kind(x.kind())
        } else {
            y
        };
        y + x
    }
}

enum Layer {
    Stem(nn::Conv2D, LayerNorm2d),
    Block(Box<Block>),
    Down(LayerNorm2d, nn::Conv2D),
    /// Global average pooling and the classifier's LayerNorm, as [N, C, 1, 1].
    HeadNorm(LayerNorm2d),
}

pub(crate) struct ConvNeXt {
    layers: Vec<Layer>,
    info: Vec<LayerInfo>,
    dim: i64,
}

impl ConvNeXt {
    /// ConvNeXt with `depths` blocks per stage, widths 96-192-384-768 and the given overall
    /// stochastic-depth rate (torchvision: 0.1 for tiny, 0.4 for small).
    pub(crate) fn new(p: &nn::Path, depths: [usize; 4], stochastic_depth: f64) -> Self {
        let dims = [96i64, 192, 384, 768];
        let f = p / "features";
        let stem_cfg = nn::ConvConfig { stride: 4, ..Default::default() };
        let mut layers =
            vec![Layer::Stem(nn::conv2d(&f / 0 / 0, 3, dims[0], 4, stem_cfg), LayerNorm2d::new(&f / 0 / 1, dims[0]))];
        let mut info =
            vec![LayerInfo { prefixes: vec!["features.0".into()], name: "stem".into(), has_batchnorm: false }];
        let total: usize = depths.iter().sum();
        let mut done = 0;
        for (s, (&depth, &dim)) in depths.iter().zip(&dims).enumerate() {
            let stage = 1 + 2 * s;
            for i in 0..depth {
                let drop = stochastic_depth * done as f64 / (total as f64 - 1.0);
                layers.push(Layer::Block(Box::new(Block::new(&f / stage / i, dim, drop))));
                info.push(LayerInfo {
                    prefixes: vec![format!("features.{stage}.{i}")],
                    name: format!("stage {} block {i}", s + 1),
                    has_batchnorm: false,
                });
                done += 1;
            }
            if s < 3 {
                let d = &f / (stage + 1);
                let down_cfg = nn::ConvConfig { stride: 2, ..Default::default() };
                layers.push(Layer::Down(
                    LayerNorm2d::new(&d / 0, dim),
                    nn::conv2d(&d / 1, dim, dims[s + 1], 2, down_cfg),
                ));
                info.push(LayerInfo {
                    prefixes: vec![format!("features.{}", stage + 1)],
                    name: format!("downsample {}", s + 1),
                    has_batchnorm: false,
                });
            }
        }
        layers.push(Layer::HeadNorm(LayerNorm2d::new(p / "classifier" / 0, dims[3])));
        info.push(LayerInfo { prefixes: vec!["classifier.0".into()], name: "head norm".into(), has_batchnorm: false });
        ConvNeXt { layers, info, dim: dims[3] }
    }
}

impl Network for ConvNeXt {
    fn layers(&self) -> &[LayerInfo] {
        &self.info
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        match &self.layers[index] {
            Layer::Stem(conv, norm) => norm.forward(&xs.apply(conv)),
            Layer::Block(block) => block.forward(xs, mode),
            Layer::Down(norm, conv) => norm.forward(xs).apply(conv),
            Layer::HeadNorm(norm) => norm.forward(&xs.adaptive_avg_pool2d([1, 1])),
        }
    }

    fn feature_dim(&self) -> i64 {
        self.dim
    }
}
