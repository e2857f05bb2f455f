//! ResNet-18/34/50 (He et al.), torchvision's layout and variable names
//! (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`); ResNet-50 is torchvision's
//! v1.5 (stride in the 3x3 convolution of a bottleneck).
//!
//! Flat layer list: 0 = stem (conv1, bn1, max-pool), then one entry per
//! residual block (`layer1.0`, `layer1.1`, ...).

use tch::Tensor;
use tch::nn;

use super::{LayerInfo, Mode, Network, conv_bn};

/// torchvision's BatchNorm2d epsilon.
const BN_EPS: f64 = 1e-5;

/// A bias-free convolution (padding kernel / 2) and its BatchNorm.
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    stride: i64,
    padding: i64,
}

impl ConvBn {
    fn new(conv: nn::Path, bn: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Self {
        let padding = k / 2;
        let cfg = nn::ConvConfig { stride, padding, bias: false, ..Default::default() };
        let bn_cfg = nn::BatchNormConfig { eps: BN_EPS, ..Default::default() };
        ConvBn { conv: nn::conv2d(conv, cin, cout, k, cfg), bn: nn::batch_norm2d(bn, cout, bn_cfg), stride, padding }
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let p = self.padding;
        conv_bn(xs, &self.conv, &self.bn, BN_EPS, self.stride, [p, p], 1, mode)
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut x = xs.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            x = c.forward(&x, mode);
            if i < last {
                // In place: BatchNorm's backward needs its input, not its output.
                let _ = x.relu_();
            }
        }
        let identity = match &self.downsample {
            Some(c) => c.forward(xs, mode),
            None => xs.shallow_clone(),
        };
        (x + identity).relu()
    }
}

pub(crate) struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    layers: Vec<LayerInfo>,
    features: i64,
}

impl ResNet {
    /// `bottleneck`: ResNet-50's 1-3-1 blocks with expansion 4; else basic 3-3 blocks.
    pub(crate) fn new(p: &nn::Path, depths: [usize; 4], bottleneck: bool) -> Self {
        let stem = ConvBn::new(p / "conv1", p / "bn1", 3, 64, 7, 2);
        let expansion = if bottleneck { 4 } else { 1 };
        let mut layers =
            vec![LayerInfo { prefixes: vec!["conv1".into(), "bn1".into()], name: "stem".into(), has_batchnorm: true }];
        let mut blocks = vec![];
        let mut cin = 64;
        for (stage, &depth) in depths.iter().enumerate() {
            let width = 64 << stage;
            for i in 0..depth {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let bp = p / format!("layer{}", stage + 1) / i;
                let cout = width * expansion;
                let convs = if bottleneck {
                    vec![
                        ConvBn::new(&bp / "conv1", &bp / "bn1", cin, width, 1, 1),
                        ConvBn::new(&bp / "conv2", &bp / "bn2", width, width, 3, stride),
                        ConvBn::new(&bp / "conv3", &bp / "bn3", width, cout, 1, 1),
                    ]
                } else {
                    vec![
                        ConvBn::new(&bp / "conv1", &bp / "bn1", cin, width, 3, stride),
                        ConvBn::new(&bp / "conv2", &bp / "bn2", width, width, 3, 1),
                    ]
                };
                let downsample = (stride != 1 || cin != cout)
                    .then(|| ConvBn::new(&bp / "downsample" / 0, &bp / "downsample" / 1, cin, cout, 1, stride));
                blocks.push(Block { convs, downsample });
                let prefix = format!("layer{}.{i}", stage + 1);
                layers.push(LayerInfo { name: prefix.clone(), prefixes: vec![prefix], has_batchnorm: true });
                cin = cout;
            }
        }
        ResNet { stem, blocks, layers, features: cin }
    }
}

impl Network for ResNet {
    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        if index == 0 {
            let mut x = self.stem.forward(xs, mode);
            let _ = x.relu_();
            return x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        self.blocks[index - 1].forward(xs, mode)
    }

    fn feature_dim(&self) -> i64 {
        self.features
    }
}
