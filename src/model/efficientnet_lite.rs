//! EfficientNet-Lite0 (Tan & Le; the "lite" variant: ReLU6, no squeeze-excite,
//! stem and head not scaled), with the variable names of the lukemelas
//! EfficientNet-PyTorch layout that the pretrained weights use
//! (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`).
//!
//! Convolutions use TensorFlow "same" padding computed from the actual input
//! size, which equals the reference's static padding at its 224 px and stays
//! correct at other sizes.
//!
//! Flat layer list (what `freeze_up_to` indexes): 0 = stem, 1..=16 = blocks
//! 0..=15, 17 = head convolution.

use tch::Tensor;
use tch::nn;

use super::{LayerInfo, Mode, Network, conv_bn, same_pad};

pub(crate) const LAYER_COUNT: usize = 18;
const FEATURES: i64 = 1280;
/// TensorFlow's BatchNorm momentum 0.99 is PyTorch's 0.01.
const BN_MOMENTUM: f64 = 0.01;
const BN_EPS: f64 = 1e-3;
/// Stochastic depth of the reference, scaled by block index; only in trainable blocks.
const DROP_CONNECT: f64 = 0.2;

/// Per stage: repeats, kernel, stride, expand ratio, input and output channels.
const STAGES: [(usize, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    kernel: i64,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    /// A bias-free convolution named `conv` and its BatchNorm named `bn`, both under `p`.
    #[allow(clippy::too_many_arguments)]
    fn new(p: &nn::Path, conv: &str, bn: &str, cin: i64, cout: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        let cfg = nn::ConvConfig { stride, groups, bias: false, ..Default::default() };
        let bn_cfg = nn::BatchNormConfig { momentum: BN_MOMENTUM, eps: BN_EPS, ..Default::default() };
        ConvBn {
            conv: nn::conv2d(p / conv, cin, cout, kernel, cfg),
            bn: nn::batch_norm2d(p / bn, cout, bn_cfg),
            kernel,
            stride,
            groups,
        }
    }

    fn forward(&self, xs: &Tensor, mode: Mode, relu6: bool) -> Tensor {
        let (h, w) = (xs.size()[2], xs.size()[3]);
        let (s, k) = (self.stride, self.kernel);
        let pad = |n: i64| (((n + s - 1) / s - 1) * s + k - n).max(0);
        let (ph, pw) = (pad(h), pad(w));
        // Symmetric "same" padding is the convolution's own padding: no padded copy of the input
        // (which would also lose a channels-last layout). Only the odd case pads explicitly.
        let (input, padding) = if ph % 2 == 0 && pw % 2 == 0 {
            (xs.shallow_clone(), [ph / 2, pw / 2])
        } else {
            (same_pad(xs, k, s), [0, 0])
        };
        let mut x = conv_bn(&input, &self.conv, &self.bn, BN_EPS, s, padding, self.groups, mode);
        // In place: BatchNorm's backward needs its input, not its output.
        if relu6 {
            let _ = x.relu6_();
        }
        x
    }
}

struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
    drop_connect: f64,
}

impl Block {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut x = match &self.expand {
            Some(e) => e.forward(xs, mode, true),
            None => xs.shallow_clone(),
        };
        x = self.depthwise.forward(&x, mode, true);
        x = self.project.forward(&x, mode, false);
        if !self.residual {
            return x;
        }
        if mode.train() && self.drop_connect > 0.0 {
            let keep = 1.0 - self.drop_connect;
            let mask = (Tensor::rand([x.size()[0], 1, 1, 1], (x.kind(), x.device())) + keep).floor();
            // One pass over the activations: the 1 / keep scale goes into the per-sample mask.
            x *= mask / keep;
        }
        x + xs
    }
}

pub(crate) struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    layers: Vec<LayerInfo>,
}

impl EfficientNetLite {
    pub(crate) fn lite0(p: &nn::Path) -> Self {
        let stem = ConvBn::new(p, "_conv_stem", "_bn0", 3, 32, 3, 2, 1);
        let total: usize = STAGES.iter().map(|s| s.0).sum();
        let mut blocks = Vec::with_capacity(total);
        for &(repeats, kernel, stride, expand, cin, cout) in &STAGES {
            for r in 0..repeats {
                let idx = blocks.len();
                let bp = p / "_blocks" / idx;
                let (cin, stride) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let hidden = cin * expand;
                let expand_conv = (expand != 1).then(|| ConvBn::new(&bp, "_expand_conv", "_bn0", cin, hidden, 1, 1, 1));
                blocks.push(Block {
                    expand: expand_conv,
                    depthwise: ConvBn::new(&bp, "_depthwise_conv", "_bn1", hidden, hidden, kernel, stride, hidden),
                    project: ConvBn::new(&bp, "_project_conv", "_bn2", hidden, cout, 1, 1, 1),
                    residual: stride == 1 && cin == cout,
                    drop_connect: DROP_CONNECT * idx as f64 / total as f64,
                });
            }
        }
        let head = ConvBn::new(p, "_conv_head", "_bn1", 320, FEATURES, 1, 1, 1);

        let mut layers = vec![LayerInfo {
            prefixes: vec!["_conv_stem".into(), "_bn0".into()],
            name: "stem".into(),
            has_batchnorm: true,
        }];
        layers.extend((0..blocks.len()).map(|i| LayerInfo {
            prefixes: vec![format!("_blocks.{i}")],
            name: format!("block {i}"),
            has_batchnorm: true,
        }));
        layers.push(LayerInfo {
            prefixes: vec!["_conv_head".into(), "_bn1".into()],
            name: "head conv".into(),
            has_batchnorm: true,
        });
        debug_assert_eq!(layers.len(), LAYER_COUNT);
        EfficientNetLite { stem, blocks, head, layers }
    }
}

impl Network for EfficientNetLite {
    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        match index {
            0 => self.stem.forward(xs, mode, true),
            i if i <= self.blocks.len() => self.blocks[i - 1].forward(xs, mode),
            _ => self.head.forward(xs, mode, true),
        }
    }

    fn feature_dim(&self) -> i64 {
        FEATURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_and_names() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNetLite::lite0(&vs.root());
        let vars = vs.variables();
        // 296 entries in the reference file, less the 49 BatchNorms' num_batches_tracked and the 2 of `_fc`.
        assert_eq!(vars.len(), 296 - 49 - 2);
        assert_eq!(vars["_blocks.15._project_conv.weight"].size(), vec![320, 1152, 1, 1]);
        assert_eq!(vars["_blocks.0._depthwise_conv.weight"].size(), vec![32, 1, 3, 3]);
        assert!(!vars.contains_key("_blocks.0._expand_conv.weight"));
        let x = Tensor::zeros([2, 3, 96, 96], (Kind::Float, Device::Cpu));
        let mut h = x;
        let mut sizes = vec![];
        for i in 0..LAYER_COUNT {
            h = net.forward_layer(i, &h, Mode::Eval);
            sizes.push(h.size());
        }
        assert_eq!(sizes[0], vec![2, 32, 48, 48]);
        assert_eq!(sizes[16], vec![2, 320, 3, 3]);
        assert_eq!(sizes[17], vec![2, 1280, 3, 3]);
    }
}
