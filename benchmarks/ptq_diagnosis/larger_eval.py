"""Agreement of zoo classifiers' .tflite files with onnxruntime on other crops of photos (docs/zoo.md, docs/ptq.md).

Written when the zoo scored the EfficientNets on 50 crops (5 per eval photo; now 20 each). This script cuts
``--per-photo`` fresh crops of the same eval photos with another seed (default 20 each: 200 crops), runs the
ONNX model in onnxruntime as the reference and prints each .tflite's top-1 agreement, per-photo agreement and
output SQNR:
    python -m benchmarks.ptq_diagnosis.larger_eval efficientnet_lite0 MODEL_fp16.tflite MODEL_int8.tflite
``--photos opencv`` scores on crops of the 23 natural photos calib_photos.py takes from OpenCV's samples
instead (none is a zoo photo). Each file after the first also gets its agreement gap to the first, with the
zoo report's interval (photos resampled, crops paired; benchmarks/zoo/spread.py).
"""
import argparse
from pathlib import Path

import numpy as np

from benchmarks.zoo.manifest import cache_dir

CACHE = cache_dir()  # $EDGEQ_ZOO_CACHE or ~/.cache/edgeq/zoo, as the zoo run uses


def main() -> None:
    from benchmarks.ptq_diagnosis.bias_drift_cost import outputs
    from PIL import Image

    from benchmarks.ptq_diagnosis.calib_photos import opencv_photos
    from benchmarks.ptq_diagnosis.weights_only import onnx_reference
    from benchmarks.zoo import data, manifest, spread

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model name with photo data, e.g. efficientnet_lite0")
    ap.add_argument("tflite", nargs="+")
    ap.add_argument("--per-photo", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--photos", choices=["eval", "opencv"], default="eval")
    a = ap.parse_args()
    z = manifest.load().model(a.model)
    _, _, h, w = z.inputs[0].shape
    if a.photos == "eval":
        n_photos = len(data.EVAL_PHOTOS)
        rgb = data.photo_crops(CACHE, data.EVAL_PHOTOS, a.per_photo, (h, w), a.seed)
    else:
        images = [Image.open(p).convert("RGB") for p in opencv_photos(CACHE)]
        n_photos = len(images)
        rgb = data.image_crops(images, a.per_photo, (h, w), a.seed)
    x = data.normalize(rgb, z.preprocessing).astype(np.float32)  # NHWC, as edgeq's .tflite takes it
    ref = onnx_reference(z.name, x)
    groups = np.repeat(np.arange(n_photos), a.per_photo)
    first = None
    for path in a.tflite:
        y = outputs(Path(path).read_bytes(), {"input": x})
        same = ref.argmax(1) == y.argmax(1)
        per_photo = same.reshape(n_photos, a.per_photo).mean(1)
        sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - y) ** 2).sum())
        print(f"{Path(path).name}: {len(same)} crops, agreement {same.mean():.3f}, SQNR {sqnr:.2f} dB, "
              f"per photo {np.round(per_photo, 2).tolist()}", flush=True)
        if first is None:
            first = same
        else:
            print(f"  gap to {Path(a.tflite[0]).name}: {spread.gap_interval(first, same, groups).text()} points",
                  flush=True)


if __name__ == "__main__":
    main()
