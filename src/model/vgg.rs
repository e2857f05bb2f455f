//! VGG-16 and VGG-16-BN (Simonyan & Zisserman), torchvision's layout and
//! variable names (`features.N`, `classifier.0`, `classifier.3`, `classifier.6`).
//!
//! Flat layer list: torchvision's `features` modules one by one (so
//! `freeze_up_to = 24` freezes `features[:24]`; ReLU and max-pool entries hold
//! no parameters), then the two pretrained fully connected layers
//! `classifier.0` and `classifier.3` (each with its ReLU and dropout). The new
//! head replaces `classifier.6`.

use tch::Tensor;
use tch::nn;

use super::{LayerInfo, Mode, Network};

const CFG: [i64; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
const DROPOUT: f64 = 0.5;

enum Module {
    Conv(nn::Conv2D),
    Bn(nn::BatchNorm),
    Relu,
    MaxPool,
    /// A pretrained fully connected layer with its ReLU and dropout; the first one pools and flattens.
    Fc {
        linear: nn::Linear,
        flatten: bool,
    },
}

pub(crate) struct Vgg {
    modules: Vec<Module>,
    layers: Vec<LayerInfo>,
}

impl Vgg {
    pub(crate) fn vgg16(p: &nn::Path, batch_norm: bool) -> Self {
        let f = p / "features";
        let mut modules = vec![];
        let mut cin = 3;
        for &c in &CFG {
            if c == 0 {
                modules.push(Module::MaxPool);
                continue;
            }
            let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
            modules.push(Module::Conv(nn::conv2d(&f / modules.len(), cin, c, 3, cfg)));
            if batch_norm {
                modules.push(Module::Bn(nn::batch_norm2d(&f / modules.len(), c, Default::default())));
            }
            modules.push(Module::Relu);
            cin = c;
        }
        let mut layers: Vec<LayerInfo> = modules
            .iter()
            .enumerate()
            .map(|(i, m)| LayerInfo {
                prefixes: vec![format!("features.{i}")],
                name: match m {
                    Module::Conv(_) => format!("conv {i}"),
                    Module::Bn(_) => format!("bn {i}"),
                    Module::Relu => format!("relu {i}"),
                    Module::MaxPool => format!("maxpool {i}"),
                    Module::Fc { .. } => unreachable!(),
                },
                has_batchnorm: matches!(m, Module::Bn(_)),
            })
            .collect();
        let c = p / "classifier";
        for (i, (idx, cin, cout)) in [(0, 512 * 7 * 7, 4096), (3, 4096, 4096)].into_iter().enumerate() {
            modules.push(Module::Fc { linear: nn::linear(&c / idx, cin, cout, Default::default()), flatten: i == 0 });
            layers.push(LayerInfo {
                prefixes: vec![format!("classifier.{idx}")],
                name: format!("fc classifier.{idx}"),
                has_batchnorm: false,
            });
        }
        Vgg { modules, layers }
    }
}

impl Network for Vgg {
    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        let train = mode.train();
        match &self.modules[index] {
            Module::Conv(c) => xs.apply(c),
            Module::Bn(b) => xs.apply_t(b, train),
            Module::Relu => xs.relu(),
            Module::MaxPool => xs.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            Module::Fc { linear, flatten } => {
                let x = if *flatten { xs.adaptive_avg_pool2d([7, 7]).flatten(1, -1) } else { xs.shallow_clone() };
                x.apply(linear).relu().dropout(DROPOUT, train)
            }
        }
    }

    fn feature_dim(&self) -> i64 {
        4096
    }

    fn pooled(&self) -> bool {
        false
    }
}
