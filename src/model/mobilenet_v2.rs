//! MobileNetV2 (Sandler et al.), torchvision's layout and variable names
//! (`features.N...`, `classifier.1`).
//!
//! Flat layer list: torchvision's `features` modules: 0 = stem convolution,
//! 1..=17 = the inverted residual blocks, 18 = the last 1x1 convolution.

use tch::Tensor;
use tch::nn;

use super::{Act, ConvBnAct, LayerInfo, Mode, Network};

/// torchvision's BatchNorm2d epsilon.
const BN_EPS: f64 = 1e-5;

/// (expansion, output channels, repeats, first stride), as in the paper's table 2.
const SETTINGS: [(i64, i64, usize, i64); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// A convolution, BatchNorm and (with `relu6`) ReLU6, as torchvision's `Conv2dNormActivation`.
#[allow(clippy::too_many_arguments)]
fn conv(c: nn::Path, b: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64, relu6: bool) -> ConvBnAct {
    let bn = nn::BatchNormConfig { eps: BN_EPS, ..Default::default() };
    ConvBnAct::new(c, b, (cin, cout), k, stride, groups, bn, if relu6 { Act::Relu6 } else { Act::None })
}

struct Stage {
    convs: Vec<ConvBnAct>,
    residual: bool,
}

pub(crate) struct MobileNetV2 {
    stages: Vec<Stage>,
    layers: Vec<LayerInfo>,
}

impl MobileNetV2 {
    pub fn new(p: &nn::Path) -> Self {
        let f = p / "features";
        let mut stages =
            vec![Stage { convs: vec![conv(&f / 0 / 0, &f / 0 / 1, 3, 32, 3, 2, 1, true)], residual: false }];
        let mut cin = 32;
        for &(t, c, n, s) in &SETTINGS {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let bp = &f / stages.len() / "conv";
                let hidden = cin * t;
                let mut convs = vec![];
                let mut k = 0;
                if t != 1 {
                    convs.push(conv(&bp / k / 0, &bp / k / 1, cin, hidden, 1, 1, 1, true));
                    k += 1;
                }
                convs.push(conv(&bp / k / 0, &bp / k / 1, hidden, hidden, 3, stride, hidden, true));
                convs.push(conv(&bp / (k + 1), &bp / (k + 2), hidden, c, 1, 1, 1, false));
                stages.push(Stage { convs, residual: stride == 1 && cin == c });
                cin = c;
            }
        }
        let last = stages.len();
        stages
            .push(Stage { convs: vec![conv(&f / last / 0, &f / last / 1, cin, 1280, 1, 1, 1, true)], residual: false });
        let layers = (0..stages.len())
            .map(|i| LayerInfo {
                prefixes: vec![format!("features.{i}")],
                name: match i {
                    0 => "stem".to_string(),
                    i if i == last => "last conv".to_string(),
                    i => format!("block {}", i - 1),
                },
                has_batchnorm: true,
            })
            .collect();
        MobileNetV2 { stages, layers }
    }
}

impl Network for MobileNetV2 {
    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        let stage = &self.stages[index];
        let mut x = xs.shallow_clone();
        for c in &stage.convs {
            x = c.forward(&x, mode);
        }
        if stage.residual { x + xs } else { x }
    }

    fn feature_dim(&self) -> i64 {
        1280
    }
}
