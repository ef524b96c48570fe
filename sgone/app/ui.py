"""The page: Gradio components wired to `sgone.app.core`. Import through `sgone.app` (which
turns Gradio's network calls off before Gradio is imported)."""
from __future__ import annotations

import logging
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from sgone.app.core import (SMALL_OBJECT_STEPS, Limits, ModelCache, Session, editor_image, editor_support, export_coco,
                            extra_supports, first_frame, load_image, load_mask, load_queries, usable_models)
from sgone.samples import sample_paths
from sgone.errors import SgoneError
from sgone.options import DEFAULT_DEVICE, DEFAULT_SIZE, DEFAULT_THRESHOLD
from sgone.viz import overlay

log = logging.getLogger("sgone.app")

JOB = "sgone-job"  # every model run shares one queue slot: one job at a time
INTRO = """# sgone: one-shot segmentation
Put a **support** photo in the editor and paint the object with the brush (or upload its mask), add
**query** photos, press **Segment**: each query gets a mask, an overlay and a similarity map. Or click an example."""


def make_examples(folder: Path) -> list[dict[str, Any]]:
    """The bundled sample, and the same photo's halves swapped with a flipped copy as a second query."""
    from sgone.io import read_image, save_image

    s = sample_paths()
    flipped = folder / "support_flipped.jpg"
    save_image(flipped, read_image(s["support"])[:, ::-1])
    return [
        {"label": "Example: persons (VOC sample)", "support": s["support"], "mask": s["support_mask"],
         "queries": [s["query"]]},
        {"label": "Example: halves swapped, one flipped", "support": s["query"], "mask": s["query_mask"],
         "queries": [s["support"], flipped]},
    ]


def sentence(exc: BaseException) -> str:
    """One line for the page; unexpected errors are logged with their traceback on the server."""
    if isinstance(exc, SgoneError):
        text = " ".join(str(exc).split())
    else:
        log.error("unexpected error in the app:\n%s", traceback.format_exc())
        text = f"unexpected {exc.__class__.__name__}; the server log has the details"
    return f"**Error:** {text}"


def _warm(cache: ModelCache, name: str) -> None:
    try:
        cache.get(name)
    except Exception as exc:  # the page reports it when the model is used
        log.warning("could not preload %s: %s", name, sentence(exc))


def _warm_all(cache: ModelCache, names: list[str]) -> None:
    """Preload each model in turn (the Video tab's too: its first run waited for the load)."""
    for name in dict.fromkeys(names):
        _warm(cache, name)


def problems_note(problems: list[str]) -> str:
    """The files that could not be used, one Markdown list item each ("" when none)."""
    if not problems:
        return ""
    items = "".join(f"\n- {' '.join(p.split())}" for p in problems)
    return f"\n\n**Not segmented ({len(problems)}):**{items}"


def build_app(model: str | None = None, device: str = DEFAULT_DEVICE, size: int | None = DEFAULT_SIZE,
              limits: Limits | None = None, workdir: str | Path | None = None):
    """The Gradio Blocks app (not launched). `workdir` holds session files and generated examples
    (default: a new temporary folder, never the current one)."""
    import gradio as gr

    from sgone.video.model import DEFAULT_VIDEO_MODEL

    limits = limits or Limits()
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sgone-app-"))
    models = usable_models()
    default_model = model or models[0]
    if default_model not in models:
        models.insert(0, default_model)  # a checkpoint path given on the command line
    # the Video tab starts on `sgone video`'s model (a prototype-* name, so listed; as good on video,
    # ~5x faster) unless --model was given
    video_model = model or DEFAULT_VIDEO_MODEL
    cache = ModelCache(device)
    # load the default model while the page opens, so the first click does not wait for it; not a
    # daemon: stopping the app during the load must wait for it (a daemon thread inside ONNX Runtime
    # at interpreter exit aborted the process with "terminate called without an active exception")
    threading.Thread(target=_warm_all, args=(cache, [default_model, video_model]), name="sgone-app-warm").start()
    examples = make_examples(workdir)
    brush = gr.Brush(colors=["#ff0000"], default_color="#ff0000", color_mode="fixed", default_size=18)

    def session_of(state: Session | None) -> Session:
        return state if state is not None else Session(cache, size=size, root=workdir)

    def uploaded_mask(editor: dict | None, mask_file: str | None) -> np.ndarray | None:
        # shown beside the editor rather than as its layer: Gradio 6 draws layers set by the server
        # out of place (and can hang) unless its canvas has the image's size
        return load_mask(mask_file, editor_image(editor).shape[:2]) if mask_file else None

    def preview(editor: dict | None, mask_file: str | None):
        """The support with the mask in use (painted strokes and the uploaded mask) tinted."""
        try:
            image, mask = editor_support(editor, uploaded_mask(editor, mask_file))
        except Exception as exc:
            return None, sentence(exc)
        return overlay(image, mask), "Mask in use shown beside the support; press **Segment**."

    def load_example(index: int):
        ex = examples[index]
        image = load_image(ex["support"], limits)
        mask = load_mask(ex["mask"], image.shape[:2])
        return ({"background": image, "layers": [], "composite": None}, str(ex["mask"]),
                [str(q) for q in ex["queries"]], overlay(image, mask),
                f"Loaded {ex['label'].split(': ', 1)[1]}: press **Segment**.")

    def run(state, editor, mask_file, extra_images, extra_masks, queries, model_name, threshold, steps,
            progress=gr.Progress()):
        session = session_of(state)
        nothing = ([], [], None, None, gr.update())
        try:
            progress(0.0, desc="reading the images")
            images, problems = load_queries(list(queries or []), limits)
            supports = [editor_support(editor, uploaded_mask(editor, mask_file)),
                        *extra_supports(extra_images, extra_masks, limits)]
            result = session.segment(model_name, supports, images, threshold,
                                     progress=lambda f, text: progress(f, desc=text),
                                     steps=[SMALL_OBJECT_STEPS[s] for s in steps or []])
        except Exception as exc:
            return (session, *nothing, sentence(exc))
        note = "support encoded" if result.encoded_support else "support reused (not re-encoded)"
        message = (f"Segmented {len(result.names)} image(s) with {model_name} ({note}). "
                   f"Masks are 0/255 PNGs at each image's size." + problems_note(problems + result.errors))
        return (session,
                [(str(p), n) for p, n in zip(result.overlays, result.names)],
                [(str(p), n) for p, n in zip(result.heatmaps, result.names)],
                [str(p) for p in result.masks], str(result.archive), overlay(*supports[0]), message)

    def clip_uploaded(state, files):
        session = session_of(state)
        if not files:
            return session, None, None, ""
        try:
            clip, image = first_frame(files, limits, session.root / "frames")
        except Exception as exc:
            return session, None, None, sentence(exc)
        return (session, str(clip), {"background": image, "layers": [], "composite": None},
                "Paint the object on the first frame, then press **Segment video**.")

    def run_video(state, clip, editor, model_name, threshold, progress=gr.Progress(track_tqdm=True)):
        session = session_of(state)
        try:
            if not clip:
                raise SgoneError("no clip: upload a video file or its frames")
            _, mask = editor_support(editor, what="first frame", can_upload=False)  # the tab has no mask upload
            result = session.segment_video(model_name, clip, mask, threshold, limits)
        except Exception as exc:
            return session, None, None, sentence(exc)
        video = str(result.video) if result.video else None
        return session, video, str(result.archive), f"Segmented {len(result.masks)} frame(s) with {model_name}."

    def coco(state):
        try:
            session = session_of(state)
            return str(export_coco(session.last, session.root))
        except Exception as exc:
            raise gr.Error(sentence(exc)) from None

    with gr.Blocks(title="sgone", delete_cache=(600, 3600)) as app:
        state = gr.State(None, time_to_live=6 * 3600, delete_callback=lambda s: s.close() if s is not None else None)
        gr.Markdown(INTRO)
        with gr.Tab("Images"):
            with gr.Row():
                with gr.Column():
                    editor = gr.ImageEditor(label="Support image: paint the object", type="numpy", image_mode="RGBA",
                                            brush=brush, eraser=gr.Eraser(default_size=18), layers=False,
                                            transforms=(), format="png", sources=("upload", "clipboard"),
                                            elem_id="support-editor")
                    with gr.Row():
                        mask_file = gr.File(label="...or upload its mask (0/255, palette or colour PNG)",
                                            file_count="single", file_types=["image"], elem_id="support-mask-file")
                        mask_preview = gr.Image(label="Mask in use", interactive=False, height=180,
                                                elem_id="mask-preview")
                    with gr.Accordion("More supports (k-shot)", open=False):
                        extra_images = gr.File(label="extra support images", file_count="multiple",
                                               file_types=["image"], elem_id="extra-images")
                        extra_masks = gr.File(label="their masks (paired in file-name order)", file_count="multiple",
                                              file_types=["image"], elem_id="extra-masks")
                with gr.Column():
                    queries = gr.File(label="Query images", file_count="multiple", file_types=["image"],
                                      elem_id="query-files")
                    model_box = gr.Dropdown(models, value=default_model, label="Model", elem_id="model")
                    threshold = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.01, label="Threshold",
                                          elem_id="threshold")
                    steps = gr.CheckboxGroup(list(SMALL_OBJECT_STEPS), value=[], label="Small objects (slower)",
                                             elem_id="small-objects")
                    run_button = gr.Button("Segment", variant="primary", elem_id="run-button")
                    example_buttons = [gr.Button(ex["label"], size="sm", elem_id=f"example-{i}")
                                       for i, ex in enumerate(examples)]
            message = gr.Markdown("", elem_id="message")
            with gr.Row():
                # "contain": portrait and landscape results are shown whole, not cropped to squares
                overlays = gr.Gallery(label="Overlays", columns=3, height="auto", object_fit="contain",
                                      elem_id="overlays")
                heatmaps = gr.Gallery(label="Similarity", columns=3, height="auto", object_fit="contain",
                                      elem_id="heatmaps")
            with gr.Row():
                mask_files = gr.File(label="Masks (PNG, 0/255)", file_count="multiple", interactive=False,
                                     elem_id="mask-files")
                archive = gr.File(label="Download all (zip)", interactive=False, elem_id="archive")
            with gr.Row():
                coco_button = gr.Button("Export COCO", size="sm", elem_id="coco-button")
                coco_file = gr.File(label="COCO annotations (RLE)", interactive=False, elem_id="coco-file")
        with gr.Tab("Video"):
            clip_path = gr.State(None)
            with gr.Row():
                with gr.Column():
                    clip_files = gr.File(label="Clip: one video file (mp4, ...) or several frames", file_count="multiple",
                                         file_types=["video", "image"], elem_id="clip-files")
                    frame_editor = gr.ImageEditor(label="First frame: paint the object", type="numpy",
                                                  image_mode="RGBA", brush=brush, eraser=gr.Eraser(default_size=18),
                                                  layers=False, transforms=(), format="png", sources=(),
                                                  elem_id="frame-editor")
                    video_model_box = gr.Dropdown(models, value=video_model, label="Model", elem_id="video-model")
                    video_button = gr.Button("Segment video", variant="primary", elem_id="video-button")
                with gr.Column():
                    video_message = gr.Markdown("", elem_id="video-message")
                    video_out = gr.Video(label="Result", interactive=False, elem_id="video-result")
                    video_zip = gr.File(label="Frame masks (zip)", interactive=False, elem_id="video-archive")

        mask_file.upload(preview, [editor, mask_file], [mask_preview, message])
        for i, button in enumerate(example_buttons):
            button.click(lambda i=i: load_example(i), None, [editor, mask_file, queries, mask_preview, message])
        run_button.click(run, [state, editor, mask_file, extra_images, extra_masks, queries, model_box, threshold,
                               steps],
                         [state, overlays, heatmaps, mask_files, archive, mask_preview, message], concurrency_id=JOB)
        coco_button.click(coco, [state], coco_file)
        clip_files.upload(clip_uploaded, [state, clip_files], [state, clip_path, frame_editor, video_message])
        video_button.click(run_video, [state, clip_path, frame_editor, video_model_box, threshold],
                           [state, video_out, video_zip, video_message], concurrency_id=JOB)
    app.queue(default_concurrency_limit=1, max_size=32)
    return app
