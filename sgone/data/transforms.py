"""Episode transforms: images and their masks change together, driven by the rng passed in.

A transform is a callable `transform(episode, rng) -> Episode`. Images are resized bilinearly,
masks by nearest neighbour so class ids and the ignore value 255 survive unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from sgone.data.episode import IGNORE, Episode
from sgone.options import DEFAULT_SIZE


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape[:2] == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


DEFAULT_EVAL_SIZE = DEFAULT_SIZE  # the longer side, as `sgone segment` and `Predictor` feed images


def pad_to(image: np.ndarray, mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad at the bottom and right to (height, width): image with 0, mask with 255 (ignored)."""
    ph, pw = height - mask.shape[0], width - mask.shape[1]
    if not (ph or pw):
        return image, mask
    return (np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0),
            np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE))


class EvalTransform:
    """Resize every image and mask so its longer side is `size` (aspect kept); keep the original
    query label for scoring.

    This is what `--size` means everywhere (`sgone segment`, `sgone evaluate`, `Predictor`).
    `size=None` (or 0) keeps each image at its own size. The supports of one episode are
    stacked into one tensor, so when their resized shapes differ they are padded at the bottom
    and right to a common shape (image 0, mask 255 = ignored, so the padding adds nothing to a
    prototype); the query is never padded. Evaluate with batch size 1 (query shapes differ).
    """

    def __init__(self, size: int | None = DEFAULT_EVAL_SIZE) -> None:
        self.size = size or None

    def __call__(self, episode: Episode, rng: np.random.Generator | None = None) -> Episode:
        original = episode.query_mask if episode.query_mask_original is None else episode.query_mask_original
        pairs = [[self.resize(img, m) for img, m in zip(images, masks)]
                 for images, masks in zip(episode.support_images, episode.support_masks)]
        height = max(m.shape[0] for row in pairs for _, m in row)
        width = max(m.shape[1] for row in pairs for _, m in row)
        pairs = [[pad_to(img, m, height, width) for img, m in row] for row in pairs]
        query, query_mask = self.resize(episode.query_image, episode.query_mask)
        return replace(
            episode,
            support_images=[[img for img, _ in row] for row in pairs],
            support_masks=[[m for _, m in row] for row in pairs],
            query_image=query, query_mask=query_mask, query_mask_original=original,
        )

    def resize(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image with its mask, longer side to `size`."""
        from sgone.inputs import input_size  # the same rule as `sgone segment`

        h, w = input_size(*mask.shape[:2], self.size)
        return resize_image(image, h, w), resize_mask(mask, h, w)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


class TrainTransform:
    """Random scale, horizontal flip, colour jitter and crop, per image (mask follows its image).

    - scale: each image is resized by a factor drawn uniformly from `scale`;
    - crop=True: pad to at least `size` (image with 0, mask with 255 so padding is ignored) and
      cut a random `size` x `size` window; for supports the window is re-drawn (up to 10 times)
      until it holds object pixels, because an empty support gives no prototype;
    - crop=False: resize straight to `size` x `size` (the scale draw is then skipped);
    - size=None: no crop and no final resize (batch size 1).
    """

    def __init__(self, size: int | None = 321, scale: tuple[float, float] = (0.75, 1.25), crop: bool = True,
                 flip: bool = True, color_jitter: float = 0.2) -> None:
        self.size = size
        self.scale = scale
        self.crop = crop
        self.flip = flip
        self.color_jitter = color_jitter

    def __call__(self, episode: Episode, rng: np.random.Generator) -> Episode:
        supports, support_masks = [], []
        for row_images, row_masks in zip(episode.support_images, episode.support_masks):
            pairs = [self.pair(img, m, rng, need_object=True) for img, m in zip(row_images, row_masks)]
            supports.append([p[0] for p in pairs])
            support_masks.append([p[1] for p in pairs])
        query, query_mask = self.pair(episode.query_image, episode.query_mask, rng, need_object=False)
        return replace(episode, support_images=supports, support_masks=support_masks,
                       query_image=query, query_mask=query_mask)

    def pair(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
             need_object: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Transform one image with its mask."""
        h, w = mask.shape
        if self.size is not None and not self.crop:
            image, mask = resize_image(image, self.size, self.size), resize_mask(mask, self.size, self.size)
        elif self.scale is not None and tuple(self.scale) != (1.0, 1.0):
            factor = rng.uniform(*self.scale)
            nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
            image, mask = resize_image(image, nh, nw), resize_mask(mask, nh, nw)
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.color_jitter:
            image = self.jitter(image, rng)
        if self.size is not None and self.crop:
            image, mask = self.random_crop(image, mask, rng, need_object)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast and saturation factors drawn from [1 - j, 1 + j]."""
        j = self.color_jitter
        b, c, s = rng.uniform(1 - j, 1 + j, size=3)
        x = image.astype(np.float32) * b
        grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = grey.mean() + (x - grey.mean()) * c
        grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        x = grey + (x - grey) * s
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)

    def random_crop(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    need_object: bool) -> tuple[np.ndarray, np.ndarray]:
        s = self.size
        h, w = mask.shape
        ph, pw = max(0, s - h), max(0, s - w)
        if ph or pw:
            top, left = ph // 2, pw // 2
            image = np.pad(image, ((top, ph - top), (left, pw - left), (0, 0)), constant_values=0)
            mask = np.pad(mask, ((top, ph - top), (left, pw - left)), constant_values=IGNORE)
            h, w = mask.shape
        has_object = need_object and (mask == 1).any()
        for _ in range(10):
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            window = mask[y:y + s, x:x + s]
            if not has_object or (window == 1).any():
                break
        else:
            # centre the window on a random object pixel so the support keeps its object
            ys, xs = np.nonzero(mask == 1)
            k = int(rng.integers(0, len(ys)))
            y = int(np.clip(ys[k] - s // 2, 0, h - s))
            x = int(np.clip(xs[k] - s // 2, 0, w - s))
        return image[y:y + s, x:x + s], mask[y:y + s, x:x + s]

    def __repr__(self) -> str:
        return (f"TrainTransform(size={self.size}, scale={self.scale}, crop={self.crop}, flip={self.flip}, "
                f"color_jitter={self.color_jitter})")
