"""Does calibrating on more *different* photos close EfficientNet-Lite's full-INT8 gap? (docs/ptq.md)

The zoo calibrates on 6 crops of each of 8 photos from the scikit-image wheel. This script adds natural colour
photos from OpenCV's samples/data (shipped in the opencv-python sdist on PyPI; fetched once, sha256-checked,
only the listed photos extracted), cuts ``--per-photo`` crops of each, converts with ``--ptq`` and scores on the
zoo's eval split, as calib_size.py does:
    python -m benchmarks.ptq_diagnosis.calib_photos efficientnet_lite0 --set zoo+opencv --per-photo 2 6
    python -m benchmarks.ptq_diagnosis.calib_photos efficientnet_lite0 --set opencv --per-photo 2
"""
import argparse
import hashlib
import re
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from PIL import Image

SDIST = "opencv_python-5.1.0.95.tar.gz"
SHA256 = "3d4a901a458e9503c92610f237850cfc970c66b3f1cc94f45f2942715280ebab"
# Natural colour photos only (no drawings, logos, charts, stereo/greyscale calibration boards); none of them is
# in the zoo's eval split
OPENCV_PHOTOS = ["aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg",
                 "butterfly.jpg", "castle.jpg", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg",
                 "leuvenA.jpg", "left.jpg", "messi5.jpg", "orange.jpg", "rgbd-color.jpg", "rubberwhale1.png",
                 "smarties.png", "squirrel_cls.jpg", "stuff.jpg", "licenseplate_motion.jpg"]


def opencv_photos(cache: Path) -> list[Path]:
    """The listed photos under <cache>/photos/opencv (sorted by name: the crop order the docs' numbers used),
    downloaded from PyPI's simple index on first use."""
    out = cache / "photos" / "opencv"
    if all((out / n).exists() for n in OPENCV_PHOTOS):
        return [out / n for n in sorted(OPENCV_PHOTOS)]
    index = urllib.request.urlopen("https://pypi.org/simple/opencv-python/", timeout=60).read().decode()
    url = re.search(r'href="([^"#]*/' + re.escape(SDIST) + ')', index).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(tmp) / SDIST
        urllib.request.urlretrieve(url, tgz)
        got = hashlib.sha256(tgz.read_bytes()).hexdigest()
        if got != SHA256:
            raise SystemExit(f"{SDIST}: sha256 {got}, expected {SHA256}")
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as t:
            for n in OPENCV_PHOTOS:
                f = t.extractfile(f"{SDIST[:-7]}/opencv/samples/data/{n}")
                (out / n).write_bytes(f.read())
    return [out / n for n in sorted(OPENCV_PHOTOS)]


def main() -> None:
    from benchmarks.ptq_diagnosis.calib_size import convert_scored
    from benchmarks.zoo import data, manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model with photo data, e.g. efficientnet_lite0")
    ap.add_argument("--set", choices=["zoo+opencv", "opencv"], default="zoo+opencv")
    ap.add_argument("--per-photo", type=int, nargs="+", default=[2])
    ap.add_argument("--ptq", default="auto")
    a = ap.parse_args()
    cache = manifest.cache_dir()
    z = manifest.load().model(a.model)
    _, _, h, w = z.inputs[0].shape
    images = [Image.open(p).convert("RGB") for p in opencv_photos(cache)]
    if a.set == "zoo+opencv":
        images = [data._photo(cache, n) for n in data.CALIB_PHOTOS] + images
    work = Path(tempfile.mkdtemp(prefix="calib_photos-"))
    for per in a.per_photo:
        rgb = data.image_crops(images, per, (h, w), data.SEED + 200 + per)
        agreement, sqnr, secs = convert_scored(z, cache, rgb, a.ptq, work, str(per))
        print(f"{a.model} {a.set} {len(images)} photos x {per} = {len(rgb)} crops, ptq={a.ptq}: agreement "
              f"{agreement:.3f}, SQNR {sqnr:.2f} dB, {secs:.0f} s", flush=True)


if __name__ == "__main__":
    main()
