//! ResNet-18/34/50 (He et al.), torchvision's layout and variable names
//! (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`); ResNet-50 is torchvision's
//! v1.5 (stride in the 3x3 convolution of a bottleneck).
//!
//! Flat layer list: 0 = stem (conv1, bn1, max-pool), then one entry per
//! residual block (`layer1.0`, `layer1.1`, ...).

use tch::Tensor;
use tch::nn;

use super::{LayerInfo, Network};

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(p, cin, cout, k, nn::ConvConfig { stride, padding: k / 2, bias: false, ..Default::default() })
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (c, b)) in self.convs.iter().enumerate() {
            x = x.apply(c).apply_t(b, train);
            if i < last {
                x = x.relu();
            }
        }
        let identity = match &self.downsample {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        (x + identity).relu()
    }
}

pub struct ResNet {
    stem: (nn::Conv2D, nn::BatchNorm),
    blocks: Vec<Block>,
    layers: Vec<LayerInfo>,
    features: i64,
}

impl ResNet {
    /// `bottleneck`: ResNet-50's 1-3-1 blocks with expansion 4; else basic 3-3 blocks.
    pub fn new(p: &nn::Path, depths: [usize; 4], bottleneck: bool) -> Self {
        let stem = (conv(p / "conv1", 3, 64, 7, 2), bn(p / "bn1", 64));
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
                        (conv(&bp / "conv1", cin, width, 1, 1), bn(&bp / "bn1", width)),
                        (conv(&bp / "conv2", width, width, 3, stride), bn(&bp / "bn2", width)),
                        (conv(&bp / "conv3", width, cout, 1, 1), bn(&bp / "bn3", cout)),
                    ]
                } else {
                    vec![
                        (conv(&bp / "conv1", cin, width, 3, stride), bn(&bp / "bn1", width)),
                        (conv(&bp / "conv2", width, width, 3, 1), bn(&bp / "bn2", width)),
                    ]
                };
                let downsample = (stride != 1 || cin != cout)
                    .then(|| (conv(&bp / "downsample" / 0, cin, cout, 1, stride), bn(&bp / "downsample" / 1, cout)));
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

    fn forward_layer(&self, index: usize, xs: &Tensor, train: bool) -> Tensor {
        if index == 0 {
            let (c, b) = &self.stem;
            return xs.apply(c).apply_t(b, train).relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        self.blocks[index - 1].forward(xs, train)
    }

    fn feature_dim(&self) -> i64 {
        self.features
    }
}
