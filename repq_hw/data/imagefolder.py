"""An ImageNet-val-style ImageFolder (``DIR/<class>/<image>``) with timm's eval transform.

Classes are the sorted sub-folder names, as torchvision's ImageFolder. For ImageNet val, the folders must
be the 1000 wnids so that their sorted order is timm's class order. Unreadable images raise an error that
names the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".JPEG")


def list_image_folder(root: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) samples and the class names of an ImageFolder directory."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"image folder {root} has no class sub-folders (expected DIR/<class>/<image>)")
    samples = []
    for idx, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in {e.lower() for e in IMAGE_EXTENSIONS}:
                samples.append((p, idx))
    if not samples:
        raise ValueError(f"image folder {root} contains no images with extensions {IMAGE_EXTENSIONS}")
    return samples, classes


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images of an ImageFolder, transformed with ``transform`` (e.g. timm's eval transform)."""

    def __init__(self, root: str | Path, transform):
        self.samples, self.classes = list_image_folder(root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ValueError(f"cannot decode image {path}: {e}") from e
        return self.transform(img), label


def timm_eval_loader(root: str | Path, model: torch.nn.Module, batch_size: int = 50,
                     limit: int | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader with timm's data config (resize, center crop, mean/std) for ``model``."""
    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):  # models built from a config, not a pretrained tag
        config["input_size"] = (pe.proj.in_channels, *pe.img_size)
    ds = ImageFolderDataset(root, timm.data.create_transform(**config, is_training=False))
    if limit is not None:
        ds = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)


def eval_transform_config(model: torch.nn.Module) -> dict:
    """timm's resolved eval data config for ``model`` (what :func:`timm_eval_loader` uses)."""
    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):
        config["input_size"] = (pe.proj.in_channels, *pe.img_size)
    return dict(config)


def load_images(paths, transform_config: dict) -> torch.Tensor:
    """Decode and transform images (as :class:`ImageFolderDataset` does), stacked as the DataLoader's
    collate stacks them; a file that cannot be decoded raises ValueError naming it."""
    import timm.data
    from PIL import Image, UnidentifiedImageError

    tf = timm.data.create_transform(**transform_config, is_training=False)
    out = []
    for path in paths:
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ValueError(f"cannot decode image {path}: {e}") from e
        out.append(tf(img))
    return torch.stack(out)
