"""Where a part lies in the picture: its silhouette, and the pose that aligns two silhouettes.

A part photographed on a plain background (a belt, a tray) separates from it by brightness:
Otsu's threshold of the blurred grey image, the side that touches the image border less is
the part, its largest connected piece kept. From the silhouette:

* centre and size: the centroid and ``sqrt(area / pi)`` of the piece with its holes filled
  (holes and small defects barely move them);
* a polar profile: the silhouette (holes included: a bore's key slot breaks a gear's
  symmetry) sampled on rings around the centre at radii proportional to the size, one
  column per degree.

The rotation between two silhouettes is the shift of the angle axis that best correlates
their profiles (a circular cross-correlation, FFT along the angles): translation and scale
are already removed by the centre and size, the light does not enter (a silhouette has no
shading). A part with an n-fold symmetric outline resolves to any of its n equivalent
rotations, all of which align it equally well.

A pool "has a silhouette" when every reference has one: the part covers between
``MIN_AREA`` and ``MAX_AREA`` of the picture and touches the border with at most
``MAX_BORDER`` of its boundary pixels. A surface (a web, a sheet) has none: its
threshold's pieces run across the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import ndimage

MIN_AREA = 0.03  # of the picture
MAX_AREA = 0.75
MAX_BORDER = 0.10  # share of the image border's pixels the part may cover
MIN_DOMINANCE = 0.97  # share of the part's side of the threshold in its largest piece
ANGLES = 360  # profile columns (one per degree)
CANDIDATE_SHARE = 0.2  # correlation peaks this close to the highest are tried (`align`)
MAX_CANDIDATES = 24
MAX_SHIFT = 0.05  # of the picture's side (`_recentred`)
# Factors tried on the size ratio where a silhouette is cut by the border (`align`).
SCALE_SEARCH = (0.9, 0.95, 1.0, 1.05, 1.1)
BLOB_SIGMA = 3.0  # pixels per 224 px of the picture (`blob_map`)
RADII = np.linspace(0.15, 1.35, 25)  # profile rings, in units of the part's size


@dataclass(frozen=True)
class Silhouette:
    """A part's place, size and polar profile in one picture (pixels of that picture)."""

    cy: float
    cx: float
    size: float  # sqrt(area / pi) of the filled silhouette
    profile: np.ndarray  # [len(RADII), ANGLES] float32, the silhouette on rings
    mask: np.ndarray  # [H, W] bool, the part (holes open)
    whole: bool = True  # the part stays off the picture's border (its size is its own)


@dataclass(frozen=True)
class Pose:
    """How a query's part maps onto a reference's: rotation, scale and both centres.

    A query pixel ``p`` (x, y) shows what the reference shows at
    ``c_ref + R(-angle) (p - c_query) / scale``.
    """

    angle: float  # degrees, counter-clockwise as displayed (image y down)
    scale: float  # query size / reference size
    query_centre: tuple[float, float]  # (x, y)
    reference_centre: tuple[float, float]
    agreement: float  # profile correlation at the angle, in [0, 1]

    def to_reference(self, points: np.ndarray) -> np.ndarray:
        """[..., 2] query (x, y) -> reference (x, y)."""
        theta = math.radians(self.angle)
        cos, sin = math.cos(theta), math.sin(theta)
        offset = (points - np.asarray(self.query_centre)) / self.scale
        # Displayed counter-clockwise with y down is a rotation by -theta in (x, y); undo it.
        x = cos * offset[..., 0] - sin * offset[..., 1]
        y = sin * offset[..., 0] + cos * offset[..., 1]
        return np.stack([x, y], axis=-1) + np.asarray(self.reference_centre)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a 1-D array of grey levels."""
    hist, edges = np.histogram(values, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(np.float64)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight / total - mean) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between[:-1]))])


def silhouette(grey: np.ndarray, *, strict: bool = True) -> Silhouette | None:
    """The part's silhouette in a grey image [H, W] (any range), or None for a surface.

    Args:
        grey: The picture's grey levels.
        strict: Also require the part to stay off the border and the background around it
            to be one piece (the test of a pool's references, module docstring); a query
            of a pool of parts may be cut by the border.
    """
    height, width = grey.shape
    blurred = ndimage.gaussian_filter(grey.astype(np.float32), 2.0)
    bright = blurred > _otsu(blurred.ravel())
    border = np.zeros_like(bright)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    # The part is the side that covers less of the border.
    part = bright if bright[border].mean() <= 0.5 else ~bright
    labels, count = ndimage.label(part)
    if count == 0:
        return None
    sizes = ndimage.sum(part, labels, index=range(1, count + 1))
    if float(sizes.max()) < MIN_DOMINANCE * float(sizes.sum()):  # a surface's many pieces
        return None
    piece = labels == int(np.argmax(sizes)) + 1
    filled = ndimage.binary_fill_holes(piece)
    area = float(filled.sum()) / (height * width)
    if not MIN_AREA <= area <= MAX_AREA:
        return None
    if strict and filled[border].mean() > MAX_BORDER:
        return None
    around, count = ndimage.label(~filled)  # the background: one piece around the part
    sizes = ndimage.sum(~filled, around, index=range(1, count + 1))
    if strict and float(sizes.max()) < MIN_DOMINANCE * float(sizes.sum()):
        return None
    ys, xs = np.nonzero(filled)
    cy, cx = float(ys.mean()), float(xs.mean())
    size = math.sqrt(float(filled.sum()) / math.pi)
    angles = np.deg2rad(np.arange(ANGLES))
    # Displayed counter-clockwise with y down: angle phi points at (cos phi, -sin phi).
    rows = cy - np.outer(RADII * size, np.sin(angles))
    cols = cx + np.outer(RADII * size, np.cos(angles))
    profile = ndimage.map_coordinates(piece.astype(np.float32), [rows, cols], order=1,
                                      mode="constant", cval=0.0)
    return Silhouette(cy, cx, size, profile.astype(np.float32), piece,
                      whole=not bool(filled[border].any()))


def _rings(profile: np.ndarray) -> np.ndarray:
    """Each ring centred and scaled to unit spread: every ring weighs alike in the match.

    The outer rings cross the outline (a gear's teeth: n equal peaks), the inner ones the
    holes; without equal weights the few columns of a key slot, which tell the n equivalent
    rotations of the outline apart, are lost in the outline's correlation. Rings without
    spread (all part or all background) weigh nothing.
    """
    centred = profile - profile.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return np.where(spread > 0.02, centred / np.maximum(spread, 1e-6), 0.0)


def align(query: Silhouette, reference: Silhouette) -> Pose:
    """The pose that maps the query's part onto the reference's (module docstring).

    The candidates are the correlation's peaks within ``CANDIDATE_SHARE`` of the highest (an
    n-fold outline has n nearly equal ones); the one whose warped reference silhouette
    leaves the weakest blob of disagreement (`blob_map`) wins, so a bore's key slot decides
    between a gear's equivalent rotations (fewest disagreeing pixels did not: a sub-degree
    better fit of 24 tooth flanks outweighs a misplaced slot).
    """
    q, r = _rings(query.profile), _rings(reference.profile)
    # corr[s] = sum_phi q(phi) r(phi - s): the query is the reference turned by s degrees.
    corr = np.fft.irfft((np.fft.rfft(q, axis=1) * np.conj(np.fft.rfft(r, axis=1))).sum(0),
                        n=ANGLES)
    norm = math.sqrt(float((q * q).sum()) * float((r * r).sum())) or 1.0
    peaks = np.nonzero((corr >= np.roll(corr, 1)) & (corr >= np.roll(corr, -1))
                       & (corr >= corr.max() - CANDIDATE_SHARE * abs(corr.max())))[0]
    peaks = peaks[np.argsort(-corr[peaks])][:MAX_CANDIDATES]
    poses = [_pose(query, reference, corr, int(shift), norm) for shift in peaks]
    poses = [_recentred(query, reference, pose) for pose in poses]
    best = (poses[0] if len(poses) == 1 else
            min(poses, key=lambda pose: float(blob_map(difference(query, reference, pose)).max())))
    if query.whole and reference.whole:
        return best
    # A part cut by the border shows less than its size: the scale that overlays the two
    # silhouettes best (fewest disagreeing pixels where the reference shows anything).
    scaled = [replace(best, scale=best.scale * factor) for factor in SCALE_SEARCH]
    fitted = min(scaled, key=lambda pose: float(difference(query, reference, pose).sum()))
    return _recentred(query, reference, fitted)


def _recentred(query: Silhouette, reference: Silhouette, pose: Pose) -> Pose:
    """The pose shifted by the whole pixels that best overlay the two silhouettes.

    Centroids move when the border cuts a part or a defect adds or removes material; the
    shift that maximises the overlap (circular cross-correlation of the query's and the
    posed reference's silhouettes, within ``MAX_SHIFT`` of the pictures' side) does not.
    """
    posed, _ = _posed_mask(reference, pose, query.mask.shape)
    spectrum = np.fft.rfft2(query.mask.astype(np.float32)) * np.conj(np.fft.rfft2(posed))
    overlap = np.fft.irfft2(spectrum, s=posed.shape)
    height, width = posed.shape
    reach = max(1, int(MAX_SHIFT * height))
    dy_all = np.r_[0:reach + 1, -reach:0]
    window = overlap[np.ix_(dy_all % height, dy_all % width)]
    row, col = np.unravel_index(int(np.argmax(window)), window.shape)
    dy, dx = int(dy_all[row]), int(dy_all[col])
    if dy == 0 and dx == 0:
        return pose
    # The query shows the posed reference moved by (dx, dy): move the query's centre back.
    qx, qy = pose.query_centre
    return Pose(angle=pose.angle, scale=pose.scale, query_centre=(qx + dx, qy + dy),
                reference_centre=pose.reference_centre, agreement=pose.agreement)


def _posed_mask(reference: Silhouette, pose: Pose,
                shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The reference's silhouette carried into the query's picture, and where it shows.

    Returns:
        [H, W] float32 silhouette (bilinear, the border's values beyond the picture) and
        [H, W] float32: 1 where the pose lands within the reference's picture.
    """
    theta = math.radians(pose.angle)
    cos, sin = math.cos(theta) / pose.scale, math.sin(theta) / pose.scale
    (qx, qy), (rx, ry) = pose.query_centre, pose.reference_centre
    # Query (x, y) -> reference (x, y), as `Pose.to_reference`.
    matrix = np.array([[cos, -sin, rx - cos * qx + sin * qy],
                       [sin, cos, ry - sin * qx - cos * qy]], dtype=np.float64)
    size = (int(shape[1]), int(shape[0]))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    posed = cv2.warpAffine(reference.mask.astype(np.float32), matrix, size, flags=flags,
                           borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones(reference.mask.shape, np.float32), matrix, size,
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return posed, inside


def _pose(query: Silhouette, reference: Silhouette, corr: np.ndarray, shift: int,
          norm: float) -> Pose:
    """The pose at one correlation peak, its angle refined between columns."""
    # Parabola through the peak and its neighbours: the angle between two columns.
    left, peak, right = corr[shift - 1], corr[shift], corr[(shift + 1) % ANGLES]
    curve = left - 2 * peak + right
    fine = shift + (0.5 * (left - right) / curve if curve < 0 else 0.0)
    angle = float((fine + ANGLES / 2) % ANGLES - ANGLES / 2)
    return Pose(angle=angle, scale=query.size / reference.size,
                query_centre=(query.cx, query.cy), reference_centre=(reference.cx, reference.cy),
                agreement=float(peak) / norm)


def blob_map(difference: np.ndarray) -> np.ndarray:
    """The disagreement averaged over blobs of ``BLOB_SIGMA`` (per 224 px of the picture).

    A sliver of sub-pixel misalignment along the outline averages to little, a missing or
    added piece, or a dent a few pixels deep, to much.
    """
    # Opening by a 3x3 square removes one- and two-pixel slivers (an outline shifted by the
    # light or the resampling) before the averaging.
    opened = cv2.morphologyEx(difference.astype(np.float32), cv2.MORPH_OPEN,
                              np.ones((3, 3), np.uint8))
    sigma = BLOB_SIGMA * difference.shape[0] / 224
    return cv2.GaussianBlur(opened, (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def difference(query: Silhouette, reference: Silhouette, pose: Pose) -> np.ndarray:
    """[H, W] float32 in [0, 1]: where the query's part and the posed reference's differ.

    The reference's silhouette is carried into the query's picture by ``pose`` (bilinear),
    so the values between 0 and 1 along the outline are sub-pixel misalignment. Where the
    pose reaches beyond the reference's picture, the reference shows nothing: 0 there.
    """
    posed, inside = _posed_mask(reference, pose, query.mask.shape)
    return np.abs(query.mask.astype(np.float32) - posed) * inside
