"""ONNX export and the ONNX Runtime backend.

A model is cut into three graphs that both runtimes share the glue around (`sgone.ops`):
- encoder: image (B,3,H,W) RGB in [0,1] -> the feature maps the model needs (BatchNorm folded,
  ImageNet normalisation inside the graph);
- prototype: one support's features + its mask's object/background cover of every feature cell
  -> the support's prototypes (masked averages, k-means background parts);
- head: query features + (fused) prototypes -> logits (B,2,h,w) and similarity (B,h,w) at stride 8.

`graphs.py` holds the torch modules that are traced, `export.py` writes them with a manifest,
`runtime.py` runs them under ONNX Runtime behind the model interface `Predictor` uses,
`quantize.py` makes int8 encoders.
"""
