"""A synthetic COCO-format person-keypoint data set: drawn articulated figures
(`generate(out, train=N, val=M)`; `python -m data_prep.synthetic` is the command).

Writes DIR/annotations/person_keypoints_{train,val}2017.json and DIR/{train,val}2017/*.jpg in
COCO's layout, so `python -m data_prep.coco --coco-root DIR` prepares it unchanged. Each image
holds 1-3 figures with the 17 COCO joints, plausible proportions and varied poses (standing,
walking, arms up, waving, sitting, free), facing the camera (their left on the image's right,
as in most COCO photos), drawn as limbs of varied thickness and colour, with hands, shoes and
trousers or shorts, lit from their left or right, on textured, noisy, cluttered
backgrounds. Figures overlap at times;
joints hidden by an occluder or by a figure drawn in front are labelled v=1; joints outside
the image, and a few random ones, are unlabelled (v=0). Some images also hold a small
background figure annotated with no keypoints, as COCO does, so the preparation's filters are
exercised. Deterministic for a seed:
image i of a split depends only on (seed, split, i).

DIR/annotations/person_detections_val2017.json stands in for a person detector's output: the
box of every annotated val figure with score 1, in the COCO detection-results format that
`shg_jax.evaluate --person-boxes` and `shg_jax.predict --person-boxes` read.
"""

from __future__ import annotations

import io
import json
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shg_jax import fileio
from shg_jax.shards import FACTORS_FIELD
from shg_jax.progress import Progress
from shg_jax.skeleton import JOINT_NAMES, SKELETON

# Joint positions of the neutral figure, in units of its height, origin at the mid-hip, y down,
# the figure's left side at +x (it faces the camera).
_HEAD = {0: (0.0, -0.43), 1: (0.028, -0.45), 2: (-0.028, -0.45), 3: (0.065, -0.445),
         4: (-0.065, -0.445)}
_SHOULDER_X, _SHOULDER_Y, _HIP_X = 0.13, -0.33, 0.085
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.16, 0.14, 0.23, 0.23
POSES = ("standing", "walking", "arms_up", "waving", "sitting", "free")
#: How each annotated figure was drawn, recorded in its annotation's `factors` field: the
#: pose class (POSES), its lit side ("left"/"right", the figure's own), its height as a
#: fraction of the photo's, its tilt in degrees, and how many of its joints are occluded
#: (v=1). The study checks whether a model's latent carries them.
FACTORS = ("pose", "lit_side", "height", "tilt", "occluded")


def _pose_angles(pose: str, rng: np.random.Generator) -> dict:
    """Segment angles in degrees from straight down, positive = outward (away from the body's
    midline), and length factors for foreshortening. Keys: arm/leg of side 'l'/'r'."""
    u = rng.uniform
    a = {}
    for side in "lr":
        if pose == "standing":
            up, low = u(5, 25), u(0, 25)
            th, sh = u(2, 10), u(-4, 6)
        elif pose == "walking":
            up, low = u(-25, 30), u(0, 45)
            swing = u(12, 30) * (1 if side == "l" else -1) * rng.choice([-1, 1])
            th, sh = swing, swing + u(-5, 15)
        elif pose == "arms_up":
            up, low = u(120, 175), u(-25, 25)
            th, sh = u(2, 15), u(-5, 8)
        elif pose == "waving":
            raised = (side == "l") == bool(rng.integers(2))
            up, low = (u(80, 150), u(20, 70)) if raised else (u(5, 30), u(0, 20))
            th, sh = u(2, 12), u(-4, 8)
        elif pose == "sitting":
            up, low = u(5, 35), u(-40, 10)
            th, sh = u(15, 45), u(-15, 10)
        else:  # free
            up, low = u(-30, 170), u(-60, 90)
            th, sh = u(-20, 60), u(-40, 40)
        a[side] = dict(upper_arm=up, forearm=up + low, thigh=th, shin=th + sh,
                       thigh_len=_THIGH * (u(0.35, 0.6) if pose == "sitting" else u(0.9, 1.1)),
                       shin_len=_SHIN * u(0.9, 1.1), upper_len=_UPPER_ARM * u(0.9, 1.1),
                       fore_len=_FOREARM * u(0.9, 1.1))
    return a


def figure_joints(pose: str, rng: np.random.Generator) -> np.ndarray:
    """(17, 2) joint positions of a figure of height 1, origin at the mid-hip."""
    a = _pose_angles(pose, rng)
    j = np.zeros((17, 2))
    for k, xy in _HEAD.items():
        j[k] = xy
    for side, sign in (("l", 1.0), ("r", -1.0)):
        s = a[side]

        def seg(start, angle, length):
            t = math.radians(angle)
            return start + length * np.array([sign * math.sin(t), math.cos(t)])

        shoulder = np.array([sign * _SHOULDER_X, _SHOULDER_Y])
        hip = np.array([sign * _HIP_X, 0.0])
        idx = 0 if side == "l" else 1
        j[5 + idx] = shoulder
        j[7 + idx] = seg(shoulder, s["upper_arm"], s["upper_len"])
        j[9 + idx] = seg(j[7 + idx], s["forearm"], s["fore_len"])
        j[11 + idx] = hip
        j[13 + idx] = seg(hip, s["thigh"], s["thigh_len"])
        j[15 + idx] = seg(j[13 + idx], s["shin"], s["shin_len"])
    return j


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour field + clutter shapes + pixel noise."""
    base = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 12)):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=colour, width=int(rng.integers(1, 6)))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    noise = rng.normal(0, rng.uniform(4, 20), (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _shade(colour, factor):
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


def _limb(draw, p, q, fill, width: int) -> None:
    """A segment with round ends."""
    draw.line((tuple(p), tuple(q)), fill=fill, width=width)
    r = width / 2
    for x, y in (p, q):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def _draw_figure(draws, joints: np.ndarray, height: float, rng: np.random.Generator) -> str:
    """Draws limbs, torso and head on every ImageDraw in `draws` ((draw, colour|None) pairs:
    None draws with the figure's colours; a fixed colour draws a mask). -> the figure's lit
    side, "left" or "right" (its own left and right)."""
    width = max(2, int(height * rng.uniform(0.035, 0.07)))
    body = tuple(int(c) for c in rng.integers(0, 256, 3))
    skin = tuple(int(c) for c in rng.integers(60, 256, 3))
    legs = tuple(int(c) for c in rng.integers(0, 256, 3))
    shins = skin if rng.random() < 0.3 else _shade(legs, 0.8)      # shorts or trousers
    shoes = tuple(int(c) for c in rng.integers(0, 120, 3))
    # Lit from the figure's right or left at random: with the light always on one side,
    # shading alone told left limbs from right ones, a cue a mirrored crop reverses, and the
    # flip test then lowered the demo's PCK (its model scored 0.744 instead of 0.786 on the
    # same val figures lit from the other side).
    dark, bright = rng.uniform(0.65, 0.85), rng.uniform(1.0, 1.2)
    left, right = (dark, bright) if rng.random() < 0.5 else (bright, dark)
    lit = "left" if left > right else "right"
    head_r = height * 0.065
    cx, cy = joints[0]
    torso = [tuple(joints[k]) for k in (5, 6, 12, 11)]
    limbs = [((11, 13), legs, left), ((13, 15), shins, left), ((12, 14), legs, right),
             ((14, 16), shins, right), ((5, 7), body, left), ((7, 9), skin, left),
             ((6, 8), body, right), ((8, 10), skin, right)]
    for draw, fixed in draws:
        def col(c, f=1.0):
            return fixed if fixed is not None else _shade(c, f)
        for (a, b), c, f in limbs[:4]:                            # legs
            _limb(draw, joints[a], joints[b], col(c, f), width)
        for k, f in ((15, left), (16, right)):                    # shoes
            x, y = joints[k]
            draw.ellipse((x - 1.1 * width, y - 0.5 * width, x + 1.1 * width, y + 0.7 * width),
                         fill=col(shoes, f))
        draw.polygon(torso, fill=col(body))
        draw.line((tuple(joints[5]), (cx, cy + head_r)), fill=col(skin), width=width)
        for (a, b), c, f in limbs[4:]:                            # arms, over the torso
            _limb(draw, joints[a], joints[b], col(c, f), width)
        for k, f in ((9, left), (10, right)):                     # hands
            x, y = joints[k]
            r = 0.8 * width
            draw.ellipse((x - r, y - r, x + r, y + r), fill=col(skin, 0.9 * f))
        draw.ellipse((cx - head_r, cy - 1.3 * head_r, cx + head_r, cy + 0.9 * head_r),
                     fill=col(skin))
        if fixed is None:
            e = max(1.0, head_r * 0.14)
            for k in (1, 2):
                x, y = joints[k]
                draw.ellipse((x - e, y - e, x + e, y + e), fill=(20, 20, 20))
            draw.ellipse((cx - e, cy - e, cx + e, cy + e), fill=_shade(skin, 0.6))
    return lit


def synth_image(rng: np.random.Generator, size: int):
    """One image and its persons: (PIL image, [(keypoints (17, 3), bbox, factors)]), factors
    being how an annotated figure was drawn (`FACTORS`), None for the unannotated one."""
    width = size
    height = int(size * rng.uniform(0.7, 1.0))
    if rng.random() < 0.5:
        width, height = height, width
    img = _background(rng, width, height)
    draw = ImageDraw.Draw(img)
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    people, masks, drawn = [], [], []
    for _ in range(n):
        relative_height = rng.uniform(0.45, 0.95)
        h = relative_height * height
        pose = str(rng.choice(POSES))
        joints = figure_joints(pose, rng)
        degrees = rng.uniform(-15, 15)
        tilt = math.radians(degrees)
        rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
        centre = np.array([rng.uniform(0.15, 0.85) * width,
                           rng.uniform(0.45, 0.7) * height])
        joints = joints @ rot.T * h + centre
        mask = Image.new("L", (width, height), 0)
        state = rng.bit_generator.state
        lit = _draw_figure([(draw, None)], joints, h, rng)
        rng.bit_generator.state = state                          # same widths for the mask
        _draw_figure([(ImageDraw.Draw(mask), 255)], joints, h, rng)
        people.append(joints)
        masks.append(np.asarray(mask) > 0)
        drawn.append({"pose": pose, "lit_side": lit, "height": round(float(relative_height), 4),
                      "tilt": round(float(degrees), 3)})
    occluders = np.zeros((height, width), bool)
    if rng.random() < 0.35:                                      # something in front
        ow, oh = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.35) * height
        ox, oy = rng.uniform(0, width - ow), rng.uniform(0, height - oh)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle((ox, oy, ox + ow, oy + oh), fill=colour)
        occluders[int(oy):int(oy + oh) + 1, int(ox):int(ox + ow) + 1] = True
    persons = []
    for i, joints in enumerate(people):
        front = occluders.copy()
        for later in masks[i + 1:]:
            front |= later
        kps = np.zeros((17, 3))
        for k, (x, y) in enumerate(joints):
            xi, yi = int(round(x)), int(round(y))
            if not (0 <= xi < width and 0 <= yi < height) or rng.random() < 0.03:
                continue                                          # v=0: unlabelled
            kps[k] = (xi, yi, 1 if front[yi, xi] else 2)
        ys, xs = np.nonzero(masks[i])
        bbox = ([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                 float(ys.max() - ys.min() + 1)] if len(xs) else [0.0, 0.0, 0.0, 0.0])
        factors = dict(drawn[i], occluded=int((kps[:, 2] == 1).sum()))
        persons.append((kps, bbox, factors))
    if rng.random() < 0.15:                                      # unannotated, far away
        h = rng.uniform(0.08, 0.15) * height
        joints = figure_joints("standing", rng) * h + (rng.uniform(0, width),
                                                       rng.uniform(0.3, 0.6) * height)
        _draw_figure([(draw, None)], joints, h, rng)
        lo, hi = joints.min(axis=0), joints.max(axis=0)
        persons.append((np.zeros((17, 3)), [float(lo[0]), float(lo[1]),
                                            float(hi[0] - lo[0]), float(hi[1] - lo[1])], None))
    return img, persons


def write_split(out: pathlib.Path, source: str, count: int, seed: int, size: int,
                first_image_id: int) -> None:
    folder = out / source
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    split_key = 0 if source.startswith("train") else 1
    with Progress(count, source, unit="images") as progress:
        for i in range(count):
            rng = np.random.default_rng((seed, split_key, i))
            img, persons = synth_image(rng, size)
            image_id = first_image_id + i
            name = f"{image_id:012d}.jpg"
            fileio.write_bytes(folder / name, _jpeg(img))
            images.append(dict(id=image_id, file_name=name, width=img.width,
                               height=img.height, license=0))
            for kps, bbox, factors in persons:
                annotations.append(dict(
                    id=first_image_id * 10 + len(annotations), image_id=image_id,
                    category_id=1, iscrowd=0, bbox=bbox, area=bbox[2] * bbox[3],
                    keypoints=[int(v) for v in kps.reshape(-1)],
                    num_keypoints=int((kps[:, 2] > 0).sum()), segmentation=[],
                    **({FACTORS_FIELD: factors} if factors else {})))
            progress.update()
    coco = dict(
        info=dict(description="shg-jax synthetic person keypoints", version="1.0"),
        licenses=[dict(id=0, name="generated", url="")],
        categories=[dict(id=1, name="person", supercategory="person",
                         keypoints=list(JOINT_NAMES),
                         skeleton=[[a + 1, b + 1] for a, b in SKELETON])],
        images=images, annotations=annotations)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(out / "annotations" / f"person_keypoints_{source}.json",
                       json.dumps(coco).encode())
    if source.startswith("val"):
        detections = [dict(image_id=a["image_id"], bbox=a["bbox"], score=1.0, category_id=1)
                      for a in annotations]
        fileio.write_bytes(out / "annotations" / f"person_detections_{source}.json",
                           json.dumps(detections).encode())


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def generate(out, *, train: int, val: int, seed: int = 0, size: int = 256) -> pathlib.Path:
    """Writes the whole data set; annotation files come after their images."""
    out = pathlib.Path(out)
    write_split(out, "val2017", val, seed, size, first_image_id=1)
    write_split(out, "train2017", train, seed, size, first_image_id=1_000_000)
    return out
