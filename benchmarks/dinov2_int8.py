"""DINOv2's precisions per executor on this CPU, one measurement (issue 24): is a static int8 worth it?

The edited DINOv2 graph (block 9) on 224 tiles, timed under ONNX Runtime fp32, ONNX Runtime on the
shipped dynamically quantised file (MatMul weights int8, `quantized_model_file`), OpenVINO fp32 and
bf16, and a static QDQ int8 copy (`onnxruntime.quantization.quantize_static`, MatMuls, activations
calibrated on --calibration-tiles tiles of the bundled photos) under OpenVINO (which runs QDQ in
int8) and ONNX Runtime. Agreement: cosine of each patch feature with ONNX Runtime fp32's on the
query's 9 tiles (mean and the worst patch); a candidate would still have to pass the accuracy rule.

    OMP_NUM_THREADS=1 python benchmarks/dinov2_int8.py [--repeats 5] [--clock cpu] [--calibration-tiles 18]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onnx_speed import CLOCKS
from sgone.backbones.dinov2 import INPUT_NAME, DinoV2S14, quantized_model_file
from sgone.backbones.weights import find_weights
from sgone.io import read_image
from sgone.samples import sample_paths


def tiles(image: np.ndarray, dino: DinoV2S14) -> np.ndarray:
    """An HxWx3 uint8 photo -> its 9 normalised 224 tiles of a 448x448 canvas, (9,3,224,224) float32."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    canvas = dino.normalize(F.interpolate(x, size=(448, 448), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat([canvas[:, :, r:r + 224, c:c + 224] for r in (0, 112, 224) for c in (0, 112, 224)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration-tiles", type=int, default=18)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from sgone.runtimes.openvino_runtime import OpenVinoSession

    dino = DinoV2S14()
    dino.load_file(find_weights("dinov2_s14"))
    edited = dino.edited_file()
    paths = sample_paths()
    photos = [read_image(paths["support"]), read_image(paths["query"])]
    calibration = np.concatenate([tiles(p, dino) for p in photos + [np.ascontiguousarray(p[:, ::-1]) for p in photos]])
    query = tiles(photos[1], dino)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration[:args.calibration_tiles, None])

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {INPUT_NAME: row}

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="sgone-dinov2-int8-") as tmp:
        static = Path(tmp) / "static.onnx"
        quantize_static(str(edited), str(static), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        sessions = {
            "ONNX Runtime fp32": ort.InferenceSession(str(edited), options, providers=["CPUExecutionProvider"]),
            "ONNX Runtime dynamic int8 (shipped)": ort.InferenceSession(str(quantized_model_file(edited)), options,
                                                                        providers=["CPUExecutionProvider"]),
            "ONNX Runtime static int8": ort.InferenceSession(str(static), options, providers=["CPUExecutionProvider"]),
            "OpenVINO fp32": OpenVinoSession(edited, "fp32", folder=Path(tmp)),
            "OpenVINO bf16": OpenVinoSession(edited, "bf16", folder=Path(tmp)),
            "OpenVINO static int8": OpenVinoSession(static, "fp32", folder=Path(tmp)),
        }
        output = dino.outputs[0]
        reference = None
        print(f"{torch.get_num_threads()} threads, {args.clock} clock, medians of {args.repeats}; "
              f"static int8 calibrated on {min(args.calibration_tiles, len(calibration))} tiles\n")
        print("| executor | one 224 tile ms | 9 tiles ms | cosine to fp32 mean | worst patch |\n|---|---:|---:|---:|---:|")
        for name, session in sessions.items():
            times = {}
            for label, batch in (("one", query[:1]), ("nine", query)):
                session.run([output], {INPUT_NAME: batch})  # warm-up (OpenVINO compiles the shape)
                runs = []
                for _ in range(args.repeats):
                    start = clock()
                    session.run([output], {INPUT_NAME: batch})
                    runs.append(1000 * (clock() - start))
                times[label] = statistics.median(runs)
            feats = torch.from_numpy(np.asarray(session.run([output], {INPUT_NAME: query})[0], np.float32))[:, 1:]
            reference = feats if reference is None else reference
            cosine = F.cosine_similarity(feats, reference, dim=-1)
            print(f"| {name} | {times['one']:.0f} | {times['nine']:.0f} | {cosine.mean():.4f} | {cosine.min():.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
