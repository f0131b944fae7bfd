"""Where an INT8 model loses the float model: SQNR of every int8 tensor against the float tensor of the same name.

Runs a float and an INT8 .tflite of one model (e.g. the zoo's <cache>/work/<model>_{fp32,int8}.tflite) on the
first samples of an .npz (NCHW image batches are transposed to the models' NHWC) and prints, in op order, each int8
op output's SQNR, scale and float max |x| (docs/zoo.md, ppocr_rec):
    python -m benchmarks.ptq_diagnosis.int8_vs_float_tensors FP32.tflite INT8.tflite EVAL.npz [--samples 4]
"""
import argparse
import warnings

import numpy as np


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("data")
    ap.add_argument("--samples", type=int, default=4)
    a = ap.parse_args()
    e = np.load(a.data)
    x = e[list(e.keys())[0]][:a.samples].astype(np.float32)
    warnings.simplefilter("ignore")

    def open_model(path):
        i = Interpreter(path, experimental_preserve_all_tensors=True)
        i.allocate_tensors()
        return i

    fi, qi = open_model(a.fp32), open_model(a.int8)
    fd, qd = fi.get_input_details()[0], qi.get_input_details()[0]
    if tuple(fd["shape"][1:]) != x.shape[1:]:
        x = np.transpose(x, (0, 2, 3, 1))
    floats = {t["name"]: t["index"] for t in fi.get_tensor_details()}
    tensors = {t["index"]: t for t in qi.get_tensor_details()}
    acc: dict[int, list] = {}
    for s in range(len(x)):
        fi.set_tensor(fd["index"], x[s:s + 1])
        fi.invoke()
        scale, zero = qd["quantization"]
        qi.set_tensor(qd["index"], np.clip(np.round(x[s:s + 1] / scale + zero), -128, 127).astype(np.int8))
        qi.invoke()
        for op in qi._get_ops_details():  # noqa: SLF001 - op order and names for the report
            for o in op["outputs"]:
                t = tensors[o]
                if t["name"] not in floats or t["dtype"] != np.int8:
                    continue
                try:
                    r = fi.get_tensor(floats[t["name"]]).astype(float)
                except ValueError:
                    continue
                sc, zp = t["quantization"]
                v = (qi.get_tensor(o).astype(float) - zp) * sc
                if r.shape != v.shape:
                    continue
                row = acc.setdefault(o, [0.0, 0.0, op["op_name"], t["name"], sc, 0.0])
                row[0] += (r ** 2).sum()
                row[1] += ((r - v) ** 2).sum()
                row[5] = max(row[5], np.abs(r).max())
    for o in sorted(acc):
        sig, err, op, name, sc, peak = acc[o]
        print(f"{o:5d} {op:22s} {10 * np.log10(sig / max(err, 1e-30)):7.1f} dB  scale {sc:.4g}  max|f| {peak:.4g}  {name[:70]}")


if __name__ == "__main__":
    main()
