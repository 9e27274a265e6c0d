"""Write the bundled workflows from one description each: the UI workflow (workflows/NAME.json, with its
stage groups, note and saved view), its API twin (workflows/api/NAME.json) and its template-browser
thumbnail (workflows/NAME.jpg, the name ComfyUI's frontend asks for beside a custom node's workflow): a sketch
of the graph, or, for a workflow whose models ship with the pack (the small world), frames of the video a real
run of it saved.

    python3 scripts/build_workflows.py          # rewrite the files (all but the thumbnails made from runs)
    python3 scripts/build_workflows.py --check  # exit 1 if a committed file differs from what this writes
    python3 scripts/build_workflows.py --thumbnail-from-run posecrafter_small_world VIDEO  # that thumbnail only

Node signatures come from the pack's INPUT_TYPES and, for core nodes, from the table in
tests/test_workflows.py (which the real-ComfyUI test checks against /object_info); the API twin is the
prompt the frontend builds from the UI workflow (tests/test_workflows.py ui_to_api). Run from anywhere;
it needs the test requirements (pytest) and Pillow.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_workflows import NOTE_NODE, all_signatures, slot_type, ui_to_api  # noqa: E402

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CONTROLNET = "control_v11p_sd15_openpose_fp16.safetensors"
VAE = "vae-ft-mse-840000-ema-pruned.safetensors"
TUNED = "posecrafter_tuned.safetensors"
MODELS = [
    {"name": CHECKPOINT, "directory": "checkpoints",
     "url": f"https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/{CHECKPOINT}"},
    {"name": CONTROLNET, "directory": "controlnet",
     "url": f"https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/{CONTROLNET}"},
    {"name": VAE, "directory": "vae",
     "url": f"https://huggingface.co/stabilityai/sd-vae-ft-mse-original/resolve/main/{VAE}"},
]

CLIP_VISION_MODEL = {
    "name": "clip_vision_h.safetensors", "directory": "clip_vision",
    "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/clip_vision/clip_vision_h.safetensors",
}

# Layout, in canvas units: columns of nodes, stacked top to bottom; a group is drawn around each stage's nodes.
COLUMN_GAP, NODE_GAP, GROUP_GAP = 60, 40, 80
GROUP_PADDING, GROUP_TITLE = 20, 50
TITLE_HEIGHT = 30  # the frontend draws a node's title bar above its pos
# Where the saved view puts the graph's top-left corner on screen (clear of the sidebar and the tab bar),
# and the screen area it must fit in (a 1920x1080 browser window less ComfyUI's menus).
VIEW_ORIGIN, VIEW_AREA, VIEW_MAX_SCALE = (80, 95), (1790, 900), 0.8
GROUP_COLORS = ["#3f789e", "#8a8a3f", "#a1309b", "#b06634", "#3f8a5a", "#88a", "#444"]
# Heights the frontend needs (LiteGraph: 20 px per slot row, 24 per widget) plus room for images and text.
SLOT_HEIGHT, WIDGET_HEIGHT = 22, 26
SHOWN_HEIGHT = {"PreviewImage": 180, "PreviewAny": 100, "LoadVideo": 220, "SaveVideo": 180, "CLIPTextEncode": 70}
NODE_WIDTH = 340


class Node:
    """A node: its inputs by name are widget values or (node, output name) links; a widget fed by a link
    keeps the value given as NAME_default (the frontend saves one)."""

    def __init__(self, node_id, kind, title, column, stage, inputs, size):
        self.id, self.kind, self.title = node_id, kind, title
        self.column, self.stage, self.inputs, self.fixed_size = column, stage, inputs, size

    def __getitem__(self, output_name):
        """An output of this node, to pass as another node's input."""
        return self, output_name


class Workflow:
    """One workflow being described: nodes in columns, each node in a titled stage."""

    def __init__(self, name, note, models=MODELS, thumbnail_from_run=False):
        self.name, self.note, self.models, self.nodes = name, note, models, []
        self.thumbnail_from_run = thumbnail_from_run  # made by --thumbnail-from-run, not drawn

    def add(self, kind, column, stage, title=None, size=None, **inputs):
        node = Node(len(self.nodes) + 1, kind, title, column, stage, inputs, size)
        self.nodes.append(node)
        return node

    def build(self, signatures):
        """The UI workflow as the frontend saves it (format 0.4)."""
        links, ui_nodes = [], {}
        for node in self.nodes:
            ui_nodes[node.id] = ui_node(node, signatures)
        for node in self.nodes:
            for name, value in node.inputs.items():
                if not isinstance(value, tuple):
                    continue
                source, output_name = value
                outputs = [o for o, _ in signatures[source.kind]["outputs"]]
                slot = outputs.index(output_name)
                kind = signatures[source.kind]["outputs"][slot][1]
                sockets = ui_nodes[node.id]["inputs"]
                target = next(i for i, s in enumerate(sockets) if s["name"] == name)
                link_id = len(links) + 1
                links.append([link_id, source.id, slot, node.id, target, kind])
                sockets[target]["link"] = link_id
                ui_nodes[source.id]["outputs"][slot]["links"].append(link_id)
        for ui in ui_nodes.values():
            for output in ui["outputs"]:
                output["links"] = output["links"] or None
        for order, node_id in enumerate(execution_order(self.nodes)):
            ui_nodes[node_id]["order"] = order
        groups = place(self.nodes, ui_nodes)
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": list(ui_nodes.values()),
            "links": links,
            "groups": groups,
            "config": {},
            "extra": {"ds": saved_view(ui_nodes.values())},
            "version": 0.4,
            "models": self.models,
        }


def ui_node(node, signatures):
    if node.kind == NOTE_NODE:
        return {"id": node.id, "type": NOTE_NODE, "pos": [0, 0], "size": list(node.fixed_size), "flags": {},
                "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                "widgets_values": [node.inputs["text"]], "color": "#432", "bgcolor": "#653"}
    sig = signatures[node.kind]
    inputs, values = [], []
    for name, kind, is_widget, _ in sig["inputs"]:
        value = node.inputs.get(name)
        if not is_widget:
            inputs.append({"name": name, "type": slot_type(kind), "link": None})
            continue
        if isinstance(value, tuple):  # a widget fed by a link
            inputs.append({"name": name, "type": slot_type(kind), "link": None, "widget": {"name": name}})
            value = node.inputs.get(f"{name}_default")
        if value is None:
            raise ValueError(f"{node.kind} '{node.title}': give a value for widget {name}")
        values.append(value)
        for _ in range(sig.get("extra_widget_values", {}).get(name, 0)):
            values.append("fixed" if kind == "INT" else "image")
    values += [None, None, False][: sig.get("frontend_widget_values", 0)]
    unknown = set(node.inputs) - {name for name, *_ in sig["inputs"]} - {f"{n}_default" for n, *_ in sig["inputs"]}
    if unknown:
        raise ValueError(f"{node.kind} has no inputs {unknown}")
    ui = {
        "id": node.id, "type": node.kind, "pos": [0, 0], "size": [0, 0], "flags": {}, "order": 0, "mode": 0,
        "inputs": inputs,
        "outputs": [{"name": name, "type": kind, "links": [], "slot_index": slot}
                    for slot, (name, kind) in enumerate(sig["outputs"])],
        "properties": {"Node name for S&R": node.kind,
                       "cnr_id": "comfyui-posecrafter" if node.kind.startswith("PoseCrafter") else "comfy-core"},
        "widgets_values": values,
    }
    if node.title:
        ui["title"] = node.title
    rows = max(len([i for i in inputs if "widget" not in i]), len(sig["outputs"]))
    widgets = len(values) - sig.get("frontend_widget_values", 0)
    height = rows * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + SHOWN_HEIGHT.get(node.kind, 0) + 10
    # a file-name combo shows "name  value" on one line: about 8 canvas units a letter, plus the arrows
    files = [len(name) + len(node.inputs[name]) for name, _, is_widget, _ in sig["inputs"]
             if is_widget and str(node.inputs.get(name)).endswith(".safetensors")]
    width = max([NODE_WIDTH] + [8 * letters + 50 for letters in files])
    ui["size"] = list(node.fixed_size or (width, height))
    return ui


def execution_order(nodes):
    """Node ids in an order where every node comes after the nodes it takes inputs from."""
    done, order = set(), []

    def visit(node):
        if node.id in done:
            return
        done.add(node.id)
        for value in node.inputs.values():
            if isinstance(value, tuple):
                visit(value[0])
        order.append(node.id)

    for node in nodes:
        visit(node)
    return order


def place(nodes, ui_nodes):
    """Positions: columns of nodes; each stage takes the columns its nodes name, starting below whatever the
    stages before it left in those columns, and gets a titled group around its nodes. Returns the groups."""
    columns = sorted({n.column for n in nodes})
    widths = {c: max(ui_nodes[n.id]["size"][0] for n in nodes if n.column == c) for c in columns}
    left = {c: sum(widths[d] + COLUMN_GAP for d in columns if d < c) for c in columns}
    bottom = {c: None for c in columns}
    groups = []
    for stage in dict.fromkeys(n.stage for n in nodes):
        members = [n for n in nodes if n.stage == stage]
        used = sorted({n.column for n in members})
        top = max((bottom[c] + GROUP_GAP for c in used if bottom[c] is not None), default=0)
        title = GROUP_TITLE if stage else 0
        for column in used:
            y = top + title
            for node in (n for n in members if n.column == column):
                ui = ui_nodes[node.id]
                ui["size"][0] = widths[column]
                ui["pos"] = [left[column], y + TITLE_HEIGHT]
                y += TITLE_HEIGHT + ui["size"][1] + NODE_GAP
            bottom[column] = y - NODE_GAP
        stage_bottom = max(bottom[c] for c in used)
        for column in used:
            bottom[column] = stage_bottom
        if stage:
            x0, x1 = left[used[0]], left[used[-1]] + widths[used[-1]]
            groups.append({
                "id": len(groups) + 1, "title": stage,
                "bounding": [x0 - GROUP_PADDING, top, x1 - x0 + 2 * GROUP_PADDING, stage_bottom - top + GROUP_PADDING],
                "color": GROUP_COLORS[len(groups) % len(GROUP_COLORS)], "font_size": 24, "flags": {},
            })
    return groups


def saved_view(ui_nodes):
    """extra.ds: the scale that fits the whole graph into VIEW_AREA, placed at VIEW_ORIGIN."""
    x0 = min(n["pos"][0] for n in ui_nodes) - GROUP_PADDING
    y0 = min(n["pos"][1] for n in ui_nodes) - TITLE_HEIGHT - GROUP_TITLE
    x1 = max(n["pos"][0] + n["size"][0] for n in ui_nodes) + GROUP_PADDING
    y1 = max(n["pos"][1] + n["size"][1] for n in ui_nodes) + GROUP_PADDING
    scale = min(VIEW_MAX_SCALE, VIEW_AREA[0] / (x1 - x0), VIEW_AREA[1] / (y1 - y0))
    scale = int(scale * 100) / 100
    return {"scale": scale, "offset": [round(VIEW_ORIGIN[0] / scale - x0, 1), round(VIEW_ORIGIN[1] / scale - y0, 1)]}


# --- the workflows -------------------------------------------------------------------------------------

MODELS_STAGE = "1 Models and prompts"
POSES_STAGE = "3 Poses to follow (retargeted to your body)"
REFERENCE_STAGE = "4 Reference frame and face/hand edits"
GENERATE_STAGE = "5 Generate the video"
NOTE_SIZE = (440, 330)
MADE_BY_A = ("Run workflow **(a) posecrafter_one_shot** first: it makes `models/posecrafter/posecrafter_tuned.safetensors`"
             " (until then ComfyUI says the file is missing). Load the same training video and keep Select Frames and the"
             " source prompt as (a) had them.")


def posecrafter(name, note, *, tune, cover=False, target_text="a person is dancing", cfg=1.0, negative=False,
                context_length=0, dtype="fp16", gradient_checkpointing=False):
    """Workflows (a)-(d): the method of the paper with the driving poses retargeted to the trained person.
    tune: (a) tunes and saves, the others load the saved weights. cover: Select Frames keeps the training
    frames that cover the (retargeted) target poses, from DWPose on all training frames."""
    w = Workflow(name, note)
    train_stage = "2 Your video: train" if tune else "2 Your video and its tuned weights"
    w.add(NOTE_NODE, 0, None, size=NOTE_SIZE, text=note)
    checkpoint = w.add("CheckpointLoaderSimple", 0, MODELS_STAGE, "SD1.5 checkpoint (for CLIP)", ckpt_name=CHECKPOINT)
    vae = w.add("VAELoader", 0, MODELS_STAGE, vae_name=VAE)
    model = w.add("PoseCrafterModelLoader", 0, MODELS_STAGE, checkpoint=CHECKPOINT, controlnet=CONTROLNET, dtype=dtype)

    video = w.add("LoadVideo", 1, train_stage, "Training video (one person)", file="training.mp4")
    training = w.add("GetVideoComponents", 1, train_stage, video=video["VIDEO"])
    if cover:
        scaled = w.add("ImageScale", 1, train_stage, "All training frames, resized for the model", image=training["images"],
                       upscale_method="lanczos", width=512, height=512, crop="center")
        all_poses = w.add("PoseCrafterDWPoseExtractor", 2, train_stage, "Training poses (all frames)",
                          images=scaled["IMAGE"], fill_gaps=False)
        select = w.add("PoseCrafterSelectFrames", 2, train_stage, "Training frames covering the target poses",
                       images=scaled["IMAGE"], frames=8, mode="cover", training_pose=all_poses["pose"])
        frames, poses, retarget_from = select["images"], select["pose"], all_poses["pose"]
    else:
        select = w.add("PoseCrafterSelectFrames", 1, train_stage, "Training frames to tune on",
                       images=training["images"], frames=8, mode="uniform")
        scaled = w.add("ImageScale", 1, train_stage, "Training frames, resized for the model", image=select["images"],
                       upscale_method="lanczos", width=512, height=512, crop="center")
        frames = scaled["IMAGE"]
        poses = w.add("PoseCrafterDWPoseExtractor", 2, train_stage, "Training poses", images=frames, fill_gaps=False)["pose"]
        retarget_from = poses
    latent = w.add("VAEEncode", 2, train_stage, pixels=frames, vae=vae["VAE"])
    source = w.add("CLIPTextEncode", 2, train_stage, "Source prompt (the training video)",
                   text="a person is dancing", clip=checkpoint["CLIP"])
    if tune:
        tuner = w.add("PoseCrafterOneShotTuner", 2, train_stage, "One-Shot Tuner (learns your person and scene)",
                      model=model["model"], latent=latent["LATENT"], pose=poses, conditioning=source["CONDITIONING"],
                      steps=100, learning_rate=0.003, update_rule="paper", seed=0,
                      gradient_checkpointing=gradient_checkpointing)
        w.add("PreviewImage", 2, train_stage, "Loss curve", images=tuner["loss_curve"])
        w.add("PoseCrafterSaveTuned", 2, train_stage, "Save Tuned (for workflows b-d)", model=tuner["model"],
              filename="posecrafter_tuned")
        tuned = tuner["model"]
    else:
        tuned = w.add("PoseCrafterLoadTuned", 2, train_stage, "Tuned weights (made by workflow a)", model=model["model"],
                      tuned_weights=TUNED)["model"]

    driving_video = w.add("LoadVideo", 3, POSES_STAGE, "Driving video (the motion to follow)", file="driving.mp4")
    driving = w.add("GetVideoComponents", 3, POSES_STAGE, video=driving_video["VIDEO"])
    driving_frames = w.add("ImageScale", 3, POSES_STAGE, "Driving frames, resized for the model", image=driving["images"],
                           upscale_method="lanczos", width=512, height=512, crop="center")
    target = w.add("PoseCrafterDWPoseExtractor", 3, POSES_STAGE, "Target poses", images=driving_frames["IMAGE"],
                   fill_gaps=False)
    w.add("PreviewImage", 3, POSES_STAGE, "Target skeletons", images=target["skeleton"])
    retarget = w.add("PoseCrafterPoseRetarget", 4, POSES_STAGE, "Pose Retarget (to the training person)",
                     target_pose=target["pose"], training_pose=retarget_from, mode="bones", anchor="auto", smoothing=0.0)
    w.add("PreviewImage", 4, POSES_STAGE, "Retargeted poses (driving | on your body)", images=retarget["preview"])
    w.add("PreviewAny", 4, POSES_STAGE, "Pose retarget report", source=retarget["report"])
    target_poses = retarget["pose"]
    if cover:
        select.inputs["target_pose"] = target_poses

    selector = w.add("PoseCrafterReferenceFrameSelector", 5, REFERENCE_STAGE, images=frames, latent=latent["LATENT"],
                     training_pose=poses, target_pose=target_poses, distance="visible")
    w.add("PreviewImage", 5, REFERENCE_STAGE, "Reference frame", images=selector["image"])
    w.add("PreviewAny", 5, REFERENCE_STAGE, "Reference frame and Video-SIM", source=selector["report"])
    inserter = w.add("PoseCrafterPoseInserter", 6, REFERENCE_STAGE, target_pose=target_poses,
                     reference_pose=selector["pose"], position=0)
    inversion = w.add("PoseCrafterDDIMInverter", 6, REFERENCE_STAGE, model=tuned, latent=selector["latent"],
                      pose=selector["pose"], conditioning=source["CONDITIONING"], steps=50)
    editor = w.add("PoseCrafterLatentEditor", 6, REFERENCE_STAGE, inversion=inversion["inversion"],
                   pose=inserter["pose"], edit_face=True, edit_hands=True, alpha=1)
    w.add("PreviewAny", 6, REFERENCE_STAGE, "Latent edits per frame", source=editor["report"])

    prompt = w.add("CLIPTextEncode", 0, MODELS_STAGE, "Target prompt", text=target_text, clip=checkpoint["CLIP"])
    sampler_inputs = dict(model=tuned, latent=editor["latent"], pose=inserter["pose"], positive=prompt["CONDITIONING"],
                          steps=50, cfg=cfg, control_strength=1.0, context_length=context_length, context_overlap=4,
                          drop_inserted_frame=True)
    if negative:
        sampler_inputs["negative"] = w.add("CLIPTextEncode", 0, MODELS_STAGE, "Negative prompt", text="",
                                           clip=checkpoint["CLIP"])["CONDITIONING"]
    sampler = w.add("PoseCrafterTemporalSampler", 5, GENERATE_STAGE, **sampler_inputs)
    decoded = w.add("VAEDecode", 5, GENERATE_STAGE, samples=sampler["latent"], vae=vae["VAE"])
    video_out = w.add("CreateVideo", 6, GENERATE_STAGE, "Video at the driving video's frame rate",
                      images=decoded["IMAGE"], fps=driving["fps"], fps_default=30.0)
    w.add("SaveVideo", 6, GENERATE_STAGE, video=video_out["VIDEO"], filename_prefix=f"posecrafter/{name}",
          format="auto", codec="auto")
    return w


EVALUATE_STAGE = "6 Evaluate: compare with the real frames"


def evaluate(note):
    """Workflow (e), the paper's evaluation protocol on one clip of one person: tune on 8 frames of its first
    part, drive with the poses of the rest, compare the generated frames with those real frames. The poses
    are the person's own, so they are not retargeted."""
    w = Workflow("posecrafter_evaluate", note, models=MODELS + [CLIP_VISION_MODEL])
    train_stage = "2 Your clip: split it and train on the first part"
    poses_stage = "3 Poses to follow (the evaluation part's)"
    w.add(NOTE_NODE, 0, None, size=NOTE_SIZE, text=note)
    checkpoint = w.add("CheckpointLoaderSimple", 0, MODELS_STAGE, "SD1.5 checkpoint (for CLIP)", ckpt_name=CHECKPOINT)
    vae = w.add("VAELoader", 0, MODELS_STAGE, vae_name=VAE)
    model = w.add("PoseCrafterModelLoader", 0, MODELS_STAGE, checkpoint=CHECKPOINT, controlnet=CONTROLNET, dtype="bf16")
    clip_vision = w.add("CLIPVisionLoader", 0, MODELS_STAGE, "CLIP vision (for CLIP-I and CLIP-T)", clip_name=CLIP_VISION_MODEL["name"])
    prompt = w.add("CLIPTextEncode", 0, MODELS_STAGE, "Target prompt (the same: the paper's reconstruction protocol)",
                   text="a person is dancing", clip=checkpoint["CLIP"])

    video = w.add("LoadVideo", 1, train_stage, "Training video (one person; its last frames are the evaluation part)",
                  file="training.mp4")
    clip = w.add("GetVideoComponents", 1, train_stage, video=video["VIDEO"])
    frames = w.add("ImageScale", 1, train_stage, "Frames, resized for the model", image=clip["images"], upscale_method="lanczos",
                   width=512, height=512, crop="center")
    part = w.add("ImageFromBatch", 1, train_stage, "Training part: the first frames", image=frames["IMAGE"],
                 batch_index=0, length=64)
    evaluation = w.add("ImageFromBatch", 1, train_stage, "Evaluation part: the frames after it", image=frames["IMAGE"],
                       batch_index=64, length=4096)
    select = w.add("PoseCrafterSelectFrames", 2, train_stage, "Training frames to tune on", images=part["IMAGE"],
                   frames=8, mode="uniform")
    poses = w.add("PoseCrafterDWPoseExtractor", 2, train_stage, "Training poses", images=select["images"],
                  fill_gaps=False)["pose"]
    latent = w.add("VAEEncode", 2, train_stage, pixels=select["images"], vae=vae["VAE"])
    source = w.add("CLIPTextEncode", 2, train_stage, "Source prompt (the training video)",
                   text="a person is dancing", clip=checkpoint["CLIP"])
    tuner = w.add("PoseCrafterOneShotTuner", 2, train_stage, "One-Shot Tuner (learns your person and scene)",
                  model=model["model"], latent=latent["LATENT"], pose=poses, conditioning=source["CONDITIONING"],
                  steps=100, learning_rate=0.003, update_rule="paper", seed=0,
                  gradient_checkpointing=True)  # as (a): fits a 16 GB card, README "GPU memory"
    w.add("PreviewImage", 2, train_stage, "Loss curve", images=tuner["loss_curve"])

    target = w.add("PoseCrafterDWPoseExtractor", 3, poses_stage, "Target poses (of the evaluation part)",
                   images=evaluation["IMAGE"], fill_gaps=False)
    w.add("PreviewImage", 3, poses_stage, "Target skeletons", images=target["skeleton"])

    selector = w.add("PoseCrafterReferenceFrameSelector", 5, REFERENCE_STAGE, images=select["images"],
                     latent=latent["LATENT"], training_pose=poses, target_pose=target["pose"], distance="visible")
    w.add("PreviewImage", 5, REFERENCE_STAGE, "Reference frame", images=selector["image"])
    w.add("PreviewAny", 5, REFERENCE_STAGE, "Reference frame and Video-SIM", source=selector["report"])
    inserter = w.add("PoseCrafterPoseInserter", 6, REFERENCE_STAGE, target_pose=target["pose"],
                     reference_pose=selector["pose"], position=0)
    inversion = w.add("PoseCrafterDDIMInverter", 6, REFERENCE_STAGE, model=tuner["model"], latent=selector["latent"],
                      pose=selector["pose"], conditioning=source["CONDITIONING"], steps=50)
    editor = w.add("PoseCrafterLatentEditor", 6, REFERENCE_STAGE, inversion=inversion["inversion"],
                   pose=inserter["pose"], edit_face=True, edit_hands=True, alpha=1)
    w.add("PreviewAny", 6, REFERENCE_STAGE, "Latent edits per frame", source=editor["report"])

    sampler = w.add("PoseCrafterTemporalSampler", 5, GENERATE_STAGE,
                    "Temporal Sampler (in windows: any length of evaluation part)", model=tuner["model"],
                    latent=editor["latent"], pose=inserter["pose"], positive=prompt["CONDITIONING"], steps=50, cfg=1.0,
                    control_strength=1.0, context_length=16, context_overlap=4, drop_inserted_frame=True)
    decoded = w.add("VAEDecode", 5, GENERATE_STAGE, samples=sampler["latent"], vae=vae["VAE"])
    video_out = w.add("CreateVideo", 6, GENERATE_STAGE, "Video at the clip's frame rate", images=decoded["IMAGE"],
                      fps=clip["fps"], fps_default=30.0)
    w.add("SaveVideo", 6, GENERATE_STAGE, video=video_out["VIDEO"], filename_prefix="posecrafter/posecrafter_evaluate",
          format="auto", codec="auto")

    scores = w.add("PoseCrafterEvaluate", 3, EVALUATE_STAGE, images=decoded["IMAGE"], target_pose=target["pose"],
                   ground_truth=evaluation["IMAGE"], training_images=select["images"], clip_vision=clip_vision["CLIP_VISION"])
    w.add("PreviewAny", 3, EVALUATE_STAGE, "Evaluation report", source=scores["report"], size=(340, 360))
    w.add("PreviewImage", 4, EVALUATE_STAGE, "Evaluation plot", images=scores["plot"], size=(340, 380))
    return w


def small_world(note):
    """Workflow (f), the method on the small synthetic world (benchmarks/world), with the files its install.py
    writes and the settings of the outcome benchmark's 'full' row (benchmarks/world/cases.py): 8 of 24 training
    frames, 100 tuning steps at 3e-3 (paper rule, seed 0), the driving poses retargeted (bones) onto all training
    poses, 25 DDIM steps for inversion and sampling, guidance 1, all frames at once. Poses come from files: DWPose
    cannot see the world's people. Its models cannot be downloaded (install.py makes them), so none are listed."""
    from benchmarks.world import cases, install

    w = Workflow("posecrafter_small_world", note, models=[], thumbnail_from_run=True)
    train_stage = "2 The world's video: train"
    w.add(NOTE_NODE, 0, None, size=NOTE_SIZE, text=note)
    clip = w.add("CLIPLoader", 0, MODELS_STAGE, "The world's text encoder (random CLIP-L)", clip_name=install.CLIP,
                 type="stable_diffusion", device="default")
    vae = w.add("VAELoader", 0, MODELS_STAGE, "The world's VAE (TAESD layout)", vae_name=install.VAE)
    model = w.add("PoseCrafterModelLoader", 0, MODELS_STAGE, checkpoint=f"diffusers/{install.UNET}",
                  controlnet=install.CONTROLNET, dtype="fp32")

    def video_and_poses(column, stage, which, video_file, video_note, poses_file, poses_note):
        """A Load Video with its components, and the Load Poses of its poses with the load report shown."""
        video = w.add("LoadVideo", column, stage, f"{which} video ({video_note})", file=video_file)
        components = w.add("GetVideoComponents", column, stage, video=video["VIDEO"])
        poses = w.add("PoseCrafterLoadPoses", column, stage, f"{which} poses ({poses_note})", file=poses_file, width=0,
                      height=0, skip_first_frames=0, select_every_nth=1, frame_load_cap=0)
        w.add("PreviewAny", column, stage, f"{which} pose file report", source=poses["report"])
        return components, poses

    training, training_poses = video_and_poses(1, train_stage, "Training", install.TRAINING_VIDEO, "the world's person",
                                               install.TRAINING_POSES, "one per video frame")
    select = w.add("PoseCrafterSelectFrames", 2, train_stage, "Training frames to tune on", images=training["images"],
                   frames=cases.TUNING_FRAMES, mode="uniform", training_pose=training_poses["pose"])
    latent = w.add("VAEEncode", 2, train_stage, pixels=select["images"], vae=vae["VAE"])
    source = w.add("CLIPTextEncode", 2, train_stage, "Source prompt (the training video)", text=install.SOURCE_PROMPT,
                   clip=clip["CLIP"])
    tuner = w.add("PoseCrafterOneShotTuner", 2, train_stage, "One-Shot Tuner (learns the person and the room)",
                  model=model["model"], latent=latent["LATENT"], pose=select["pose"],
                  conditioning=source["CONDITIONING"], steps=100, learning_rate=0.003, update_rule="paper", seed=0,
                  gradient_checkpointing=False)
    w.add("PreviewImage", 2, train_stage, "Loss curve", images=tuner["loss_curve"])

    driving, target = video_and_poses(3, POSES_STAGE, "Driving", install.DRIVING_VIDEO, "its frame rate is kept",
                                      install.DRIVING_POSES, "the motion to follow")
    retarget = w.add("PoseCrafterPoseRetarget", 4, POSES_STAGE, "Pose Retarget (to the training person)",
                     target_pose=target["pose"], training_pose=training_poses["pose"], mode="bones", anchor="auto",
                     smoothing=0.0)
    w.add("PreviewImage", 4, POSES_STAGE, "Retargeted poses (driving | on the training body)",
          images=retarget["preview"])
    w.add("PreviewAny", 4, POSES_STAGE, "Pose retarget report", source=retarget["report"])

    selector = w.add("PoseCrafterReferenceFrameSelector", 5, REFERENCE_STAGE, images=select["images"],
                     latent=latent["LATENT"], training_pose=select["pose"], target_pose=retarget["pose"],
                     distance="visible")
    w.add("PreviewImage", 5, REFERENCE_STAGE, "Reference frame", images=selector["image"])
    w.add("PreviewAny", 5, REFERENCE_STAGE, "Reference frame and Video-SIM", source=selector["report"])
    inserter = w.add("PoseCrafterPoseInserter", 6, REFERENCE_STAGE, target_pose=retarget["pose"],
                     reference_pose=selector["pose"], position=0)
    inversion = w.add("PoseCrafterDDIMInverter", 6, REFERENCE_STAGE, model=tuner["model"], latent=selector["latent"],
                      pose=selector["pose"], conditioning=source["CONDITIONING"], steps=cases.STEPS)
    editor = w.add("PoseCrafterLatentEditor", 6, REFERENCE_STAGE, inversion=inversion["inversion"],
                   pose=inserter["pose"], edit_face=True, edit_hands=True, alpha=1)
    w.add("PreviewAny", 6, REFERENCE_STAGE, "Latent edits per frame", source=editor["report"])

    prompt = w.add("CLIPTextEncode", 0, MODELS_STAGE, "Target prompt (the same: the person as trained)",
                   text=install.SOURCE_PROMPT, clip=clip["CLIP"])
    sampler = w.add("PoseCrafterTemporalSampler", 5, GENERATE_STAGE, model=tuner["model"], latent=editor["latent"],
                    pose=inserter["pose"], positive=prompt["CONDITIONING"], steps=cases.STEPS, cfg=1.0,
                    control_strength=1.0, context_length=0, context_overlap=4, drop_inserted_frame=True)
    decoded = w.add("VAEDecode", 5, GENERATE_STAGE, samples=sampler["latent"], vae=vae["VAE"])
    video_out = w.add("CreateVideo", 6, GENERATE_STAGE, "Video at the driving video's frame rate",
                      images=decoded["IMAGE"], fps=driving["fps"], fps_default=30.0)
    w.add("SaveVideo", 6, GENERATE_STAGE, video=video_out["VIDEO"],
          filename_prefix="posecrafter/posecrafter_small_world", format="auto", codec="auto")
    return w


def workflows():
    loads = ("**Load** (in `ComfyUI/input`): `training.mp4`, your video of one person (8 frames or more), and "
             "`driving.mp4`, the motion to follow, in the two Load Video nodes; check the model names in group 1.")
    retargets = ("Group 3 retargets the driving poses to your person's proportions (Pose Retarget, `bones`); its preview"
                 " and report show what changed.")
    out = "**Out**: a video in `ComfyUI/output/posecrafter/` of your person following the driving poses."
    return [
        posecrafter("posecrafter_one_shot", "\n\n".join([
            "## (a) PoseCrafter one-shot: the whole method",
            loads,
            out + " Also `models/posecrafter/posecrafter_tuned.safetensors`, the tuned weights that workflows (b)-(d) load.",
            "Tuning: 100 steps at learning rate 3e-3, the paper's setting for 8 frames (set steps 0 to use the paper's"
            " formula for another frame count). " + retargets,
        ]), tune=True, dtype="bf16", gradient_checkpointing=True),  # fits a 12 GB card: README "GPU memory"
        posecrafter("posecrafter_from_tuned", "\n\n".join([
            "## (b) A new video from saved tuned weights",
            MADE_BY_A,
            loads.replace("your video of one person (8 frames or more)", "the training video (a) was tuned on") +
            " Pick any driving video.",
            out + " No tuning: only inversion and sampling run. " + retargets,
        ]), tune=False),
        posecrafter("posecrafter_attribute_edit", "\n\n".join([
            "## (c) Attribute editing",
            MADE_BY_A,
            loads.replace("your video of one person (8 frames or more)", "the training video (a) was tuned on"),
            out + " The target prompt changes an attribute (\"a person in a red dress is dancing\"), with cfg 3 and an"
            " empty negative prompt. " + retargets,
        ]), tune=False, target_text="a person in a red dress is dancing", cfg=3.0, negative=True),
        posecrafter("posecrafter_long_video", "\n\n".join([
            "## (d) Long driving videos",
            MADE_BY_A,
            loads.replace("your video of one person (8 frames or more)", "the training video (a) was tuned on"),
            out + " Sampling runs in windows of 16 frames overlapping by 4, all sharing the reference frame.",
            "Select Frames runs in `cover` mode: DWPose reads every training frame and the 8 frames whose poses are"
            " closest to the retargeted target poses become the reference-frame candidates. " + retargets,
        ]), tune=False, cover=True, context_length=16),
        evaluate("\n\n".join([
            "## (e) Evaluate: the paper's protocol on one video",
            "**Load** (in `ComfyUI/input`): `training.mp4`, one video of one person, longer than 64 frames: frames 0-63"
            " are the training part (8 of them are tuned on), the rest the evaluation part. Check the model names in"
            " group 1 (a CLIP vision file for CLIP-I/T).",
            "**Out**: the evaluation part generated from its own poses (a video in `ComfyUI/output/posecrafter/`)"
            " and, in group 6, a report (MSE-P pose error by part, PSNR, SSIM, CLIP-I, CLIP-T, worst frames) and a"
            " per-frame plot, measured against the real frames. Numbers compare only between runs at the same size"
            " and frame count.",
        ])),
        small_world("\n\n".join([
            "## (f) The small world: a check, not a model for real people",
            "The whole method on a small synthetic world (`benchmarks/world`): a drawn person, tiny models trained on"
            " such people (128x128 frames) and a random text encoder. It runs in minutes on a CPU and shows whether"
            " ComfyUI's nodes and the pack's fit together: the video should show the training person, in the training"
            " room, doing the driving motion. It is no use for photos or videos of real people.",
            "**Load**: once, from the PoseCrafter folder, run"
            " `python benchmarks/world/install.py <your ComfyUI folder>`: it writes the world's models (`models/diffusers`, `models/controlnet`, `models/vae`,"
            " `models/text_encoders`) and its videos and pose files (`input/small_world_*`) that this workflow names."
            " The poses come from files (Load Poses): DWPose cannot see the world's people. The videos are lossless"
            " mp4 that browsers do not preview.",
            "**Out**: a 16-frame 128x128 video in `ComfyUI/output/posecrafter/`, made with the settings of the outcome"
            " benchmark's `full` row, so `benchmarks.world.score(...)` measures it as the benchmark does.",
        ])),
    ]


def outputs(thumbnails=False):
    """{path: bytes} of every file this script writes (the thumbnails only when asked: their bytes depend
    on the Pillow version)."""
    signatures = all_signatures()
    files = {}
    for workflow in workflows():
        ui = workflow.build(signatures)
        files[ROOT / "workflows" / f"{workflow.name}.json"] = dump(ui)
        files[ROOT / "workflows" / "api" / f"{workflow.name}.json"] = dump(ui_to_api(ui, signatures))
        if thumbnails and not workflow.thumbnail_from_run:
            files[ROOT / "workflows" / f"{workflow.name}.jpg"] = thumbnail(ui, title(workflow))
    return files


def title(workflow):
    """The workflow's title: its note's heading."""
    return workflow.note.splitlines()[0].lstrip("# ")


def card(title, size):
    """A thumbnail's canvas with the pack's name and the workflow's title on top: (image, draw, top of the
    free area, margin)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "#202020")
    draw = ImageDraw.Draw(image)
    margin = 16
    draw.text((margin, 14), "PoseCrafter", font=ImageFont.load_default(size=18), fill="#9ab")
    draw.text((margin, 36), title, font=ImageFont.load_default(size=24), fill="white")
    return image, draw, 70, margin


def jpeg(image):
    import io

    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def thumbnail(ui, title, size=(640, 420)):
    """A JPEG sketch of the workflow for the template browser: its title, the stage groups with their
    titles and the nodes as boxes, in the saved layout."""
    from PIL import ImageFont

    image, draw, top, margin = card(title, size)
    boxes = [g["bounding"] for g in ui["groups"]] + [[*n["pos"], *n["size"]] for n in ui["nodes"]]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes) - TITLE_HEIGHT
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    scale = min((size[0] - 2 * margin) / (x1 - x0), (size[1] - top - margin) / (y1 - y0))

    def box(x, y, w, h):
        return [margin + (x - x0) * scale, top + (y - y0) * scale, margin + (x + w - x0) * scale, top + (y + h - y0) * scale]

    for group in ui["groups"]:
        draw.rectangle(box(*group["bounding"]), fill=group["color"])
    for node in ui["nodes"]:
        x, y = node["pos"]
        draw.rectangle(box(x, y - TITLE_HEIGHT, *node["size"]), fill="#353535", outline="#111")
    label = ImageFont.load_default(size=14)
    for group in ui["groups"]:
        x, y, right, _ = box(*group["bounding"])
        lines = [""]
        for word in group["title"].split("(")[0].split():  # wrapped to the group's width
            line = f"{lines[-1]} {word}".strip()
            if draw.textlength(line, font=label) > right - x - 8 and lines[-1]:
                lines.append(word)
            else:
                lines[-1] = line
        draw.multiline_text((x + 4, y + 3), "\n".join(lines), font=label, fill="white", spacing=2)
    return jpeg(image)


def video_thumbnail(video, title, size=(640, 420), columns=4, rows=2):
    """A JPEG of frames of ``video`` (what a real run of the workflow saved) for the template browser:
    columns x rows frames spread evenly over it, first to last, under the workflow's title."""
    import av

    try:
        with av.open(str(video)) as container:
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except (OSError, av.error.FFmpegError) as error:
        raise SystemExit(f"cannot read the video {video}: {error}; give the video a run of the workflow saved")
    if len(frames) < columns * rows:
        raise SystemExit(f"the video {video} has {len(frames)} frames: a thumbnail shows {columns * rows}")
    image, _, top, margin = card(title, size)
    gap = 4
    side = min((size[0] - 2 * margin - (columns - 1) * gap) // columns,
               (size[1] - top - margin - (rows - 1) * gap) // rows)
    left = (size[0] - columns * side - (columns - 1) * gap) // 2
    top += (size[1] - top - margin - rows * side - (rows - 1) * gap) // 2
    count = columns * rows
    for i in range(count):
        frame = frames[round(i * (len(frames) - 1) / (count - 1))].resize((side, side))
        row, column = divmod(i, columns)
        image.paste(frame, (left + column * (side + gap), top + row * (side + gap)))
    return jpeg(image)


def dump(data):
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--check", action="store_true", help="only list the files that differ from what it would write")
    parser.add_argument("--thumbnail-from-run", nargs=2, metavar=("NAME", "VIDEO"),
                        help="only write workflows/NAME.jpg, from the video a real run of workflow NAME saved")
    args = parser.parse_args(argv[1:])
    if args.thumbnail_from_run:
        name, video = args.thumbnail_from_run
        from_runs = {w.name: w for w in workflows() if w.thumbnail_from_run}
        if name not in from_runs:
            parser.error(f"{name}: the workflows whose thumbnail comes from a run are {', '.join(from_runs)}")
        path = ROOT / "workflows" / f"{name}.jpg"
        path.write_bytes(video_thumbnail(Path(video), title(from_runs[name])))
        print(f"wrote {path}")
        return 0
    check = args.check
    files = outputs(thumbnails=not check)
    if check:
        stale = [str(p.relative_to(ROOT)) for p, data in files.items() if not p.is_file() or p.read_bytes() != data]
        print("\n".join(stale) or "all workflows are up to date")
        return 1 if stale else 0
    for path, data in files.items():
        path.write_bytes(data)
    print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
