"""The bundled workflows: they parse, use only PoseCrafter and core nodes, link compatible slots, their
widget values match each node's widgets, and each API-format twin says the same as its UI workflow."""
import importlib.util
import json
import re

import pytest

from tests.comfy_pack import ROOT, load_pack

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
API_DIR = ROOT / "workflows" / "api"
RETARGETED = [p for p in WORKFLOWS if p.stem != "posecrafter_evaluate"]
SMALL_WORLD = "posecrafter_small_world"

# The core nodes the workflows use, as ComfyUI defines them (nodes.py, comfy_extras/nodes_video.py and nodes_images.py):
# inputs in definition order as (name, type, is_widget, required), outputs as (name, type).
# LoadVideo's file combo has an upload button, and the frontend stores its value ("image") as an extra
# widget value after the file name, like LoadImage's.
CORE_NODES = {
    "LoadVideo": {
        "inputs": [("file", "COMBO", True, True)],
        "outputs": [("VIDEO", "VIDEO")],
        "extra_widget_values": {"file": 1},
    },
    "GetVideoComponents": {
        "inputs": [("video", "VIDEO", False, True)],
        "outputs": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")],
    },
    "ImageScale": {
        "inputs": [
            ("image", "IMAGE", False, True),
            ("upscale_method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], True, True),
            ("width", "INT", True, True),
            ("height", "INT", True, True),
            ("crop", ["disabled", "center"], True, True),
        ],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "CheckpointLoaderSimple": {
        "inputs": [("ckpt_name", "COMBO", True, True)],
        "outputs": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    },
    "VAELoader": {"inputs": [("vae_name", "COMBO", True, True)], "outputs": [("VAE", "VAE")]},
    # nodes.py: the type list grows with every ComfyUI version, so only its type is pinned; device is an advanced
    # widget the frontend stores a value for
    "CLIPLoader": {
        "inputs": [("clip_name", "COMBO", True, True), ("type", "COMBO", True, True),
                   ("device", ["default", "cpu"], True, False)],
        "outputs": [("CLIP", "CLIP")],
    },
    "CLIPTextEncode": {
        "inputs": [("text", "STRING", True, True), ("clip", "CLIP", False, True)],
        "outputs": [("CONDITIONING", "CONDITIONING")],
    },
    "VAEEncode": {
        "inputs": [("pixels", "IMAGE", False, True), ("vae", "VAE", False, True)],
        "outputs": [("LATENT", "LATENT")],
    },
    "VAEDecode": {
        "inputs": [("samples", "LATENT", False, True), ("vae", "VAE", False, True)],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "CreateVideo": {
        "inputs": [("images", "IMAGE", False, True), ("fps", "FLOAT", True, True), ("audio", "AUDIO", False, False)],
        "outputs": [("VIDEO", "VIDEO")],
    },
    "SaveVideo": {
        "inputs": [
            ("video", "VIDEO", False, True),
            ("filename_prefix", "STRING", True, True),
            ("format", ["auto", "mp4"], True, True),
            ("codec", ["auto", "h264"], True, True),
        ],
        "outputs": [],
    },
    "PreviewImage": {"inputs": [("images", "IMAGE", False, True)], "outputs": []},
    # comfy_extras/nodes_images.py: frames batch_index .. batch_index + length - 1, clamped to the batch
    "ImageFromBatch": {
        "inputs": [("image", "IMAGE", False, True), ("batch_index", "INT", True, True), ("length", "INT", True, True)],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "CLIPVisionLoader": {"inputs": [("clip_name", "COMBO", True, True)], "outputs": [("CLIP_VISION", "CLIP_VISION")]},
    # "Preview as Text" (comfy_extras/nodes_preview_any.py): its input takes any type ("*"). The frontend gives
    # it three widgets of its own (the text box, a Markdown twin of it and the Markdown toggle) and stores a
    # value for each; ComfyUI does not declare them and ignores them in a prompt, so the API twins leave them out.
    "PreviewAny": {"inputs": [("source", "*", False, True)], "outputs": [], "frontend_widget_values": 3},
}
# The frontend's own note node (a Markdown text box): not sent to ComfyUI, so it has no signature and no API twin.
NOTE_NODE = "MarkdownNote"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
MISSING = object()
# PoseCrafter combos listing the user's model and pose files: their options depend on the machine.
FILE_COMBOS = {"checkpoint", "controlnet", "tuned_weights", "file"}


def pack_signatures():
    """The same description for every PoseCrafter node, read from its INPUT_TYPES."""
    signatures = {}
    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        inputs, extra = [], {}
        for section in ("required", "optional"):
            for input_name, (kind, options) in spec.get(section, {}).items():
                is_widget = isinstance(kind, list) or kind in WIDGET_TYPES
                if input_name in FILE_COMBOS:
                    assert isinstance(kind, list), f"{name}.{input_name} should list model files"
                    kind = "COMBO"
                inputs.append((input_name, kind, is_widget, section == "required"))
                if options.get("control_after_generate"):
                    extra[input_name] = 1
        outputs = list(zip(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES, cls.RETURN_TYPES))
        signatures[name] = {"inputs": inputs, "outputs": outputs, "extra_widget_values": extra}
    return signatures


def all_signatures():
    return {**CORE_NODES, **pack_signatures()}


def slot_type(kind):
    return "COMBO" if isinstance(kind, list) else kind


def ui_to_api(workflow, signatures):
    """Convert a UI-format workflow to the API prompt ComfyUI's frontend exports (widget values by name,
    links as [source id, output slot])."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] == NOTE_NODE:
            continue
        sig = signatures[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for name, _, is_widget, _ in sig["inputs"]:
            if is_widget:
                value = next(values, MISSING)
                if value is MISSING:  # saved before this optional widget was appended: ComfyUI uses its default
                    continue
                for _ in range(sig.get("extra_widget_values", {}).get(name, 0)):
                    next(values)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title", node["type"])},
        }
    return prompt


@pytest.fixture(scope="module")
def signatures():
    return all_signatures()


def test_there_are_six_workflows_with_api_twins():
    names = {p.stem for p in WORKFLOWS}
    assert names == {"posecrafter_one_shot", "posecrafter_from_tuned", "posecrafter_attribute_edit",
                     "posecrafter_long_video", "posecrafter_evaluate", "posecrafter_small_world"}
    assert {p.stem for p in API_DIR.glob("*.json")} == names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_nodes_and_links(path, signatures):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "duplicate node ids"
    assert workflow["last_node_id"] == max(nodes)
    assert workflow["last_link_id"] == max(link[0] for link in workflow["links"])
    notes = [node for node in nodes.values() if node["type"] == NOTE_NODE]
    assert len(notes) == 1 and notes[0]["widgets_values"][0].strip(), f"{path.name}: one note saying what to load"
    nodes = {i: node for i, node in nodes.items() if node["type"] != NOTE_NODE}
    for node in nodes.values():
        assert node["type"] in signatures, f"{path.name}: node type {node['type']} is neither core nor PoseCrafter"
        assert node["type"] in CORE_NODES or node["type"].startswith("PoseCrafter")

    link_ids = set()
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert link_id not in link_ids
        link_ids.add(link_id)
        src_node, dst_node = nodes[src], nodes[dst]
        out_name, out_type = signatures[src_node["type"]]["outputs"][src_slot]
        socket = dst_node["inputs"][dst_slot]
        assert socket["link"] == link_id, f"{path.name}: link {link_id} not recorded on its target input"
        assert link_id in (src_node["outputs"][src_slot]["links"] or [])
        assert src_node["outputs"][src_slot]["type"] == out_type == kind, f"{path.name}: link {link_id} type"
        target = {name: slot_type(t) for name, t, _, _ in signatures[dst_node["type"]]["inputs"]}
        assert socket["name"] in target, f"{path.name}: {dst_node['type']} has no input {socket['name']}"
        assert socket["type"] == target[socket["name"]] in ("*", kind), (
            f"{path.name}: link {link_id} carries {kind} into {dst_node['type']}.{socket['name']} "
            f"({target[socket['name']]})"
        )

    for node in nodes.values():
        sig = signatures[node["type"]]
        connected = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, kind, is_widget, required in sig["inputs"]:
            if required and not is_widget:
                assert name in connected, f"{path.name}: {node['type']} #{node['id']} input {name} is not connected"
        # one value per widget, plus the frontend's extra value after seeds and upload combos, plus the
        # values of widgets the frontend adds itself
        widgets = [(name, kind, required) for name, kind, is_widget, required in sig["inputs"] if is_widget]
        extra = sum(sig.get("extra_widget_values", {}).values()) + sig.get("frontend_widget_values", 0)
        expected = len(widgets) + extra
        # A workflow saved before optional widgets were appended lacks their values; the frontend then
        # keeps their defaults (values are matched to widgets by position).
        appended = 0
        while appended < len(widgets) and not widgets[-1 - appended][2]:
            appended += 1
        values = node.get("widgets_values", [])
        assert expected - appended <= len(values) <= expected, (
            f"{path.name}: {node['type']} #{node['id']} has {len(values)} widget values, expects {expected}"
        )
        widgets = widgets[: len(widgets) - (expected - len(values))]
        position = 0
        for name, kind, _ in widgets:
            value = values[position]
            if isinstance(kind, list):
                assert value in kind, f"{path.name}: {node['type']}.{name} = {value!r} is not one of {kind}"
            elif kind == "INT":
                assert isinstance(value, int) and not isinstance(value, bool), f"{node['type']}.{name}"
            elif kind == "FLOAT":
                assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{node['type']}.{name}"
            elif kind in ("STRING", "COMBO"):
                assert isinstance(value, str), f"{node['type']}.{name}"
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), f"{node['type']}.{name}"
            extra = sig.get("extra_widget_values", {}).get(name, 0)
            if extra and kind == "INT":
                assert values[position + 1] in ("fixed", "increment", "decrement", "randomize")
            position += 1 + extra


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if p.stem != SMALL_WORLD], ids=lambda p: p.stem)
def test_workflow_names_its_models(path):
    workflow = json.loads(path.read_text())
    models = workflow["models"]
    directories = {m["directory"] for m in models}
    assert {"checkpoints", "controlnet", "vae"} <= directories
    # The frontend checks these against ComfyUI's model listing, which only lists weight files
    # (.safetensors, .ckpt, .pt, ...), and downloads only .safetensors: DWPose's .onnx files would show
    # as missing on every load, with a download that cannot work. The README and the DWPose node's
    # error message name them instead.
    assert all(m["name"].endswith((".safetensors", ".sft")) for m in models), models
    for model in models:
        assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith(model["name"])
    names = {m["name"] for m in models}
    for node in workflow["nodes"]:
        if node["type"] in ("CheckpointLoaderSimple", "VAELoader", "CLIPVisionLoader"):
            assert node["widgets_values"][0] in names
        if node["type"] == "PoseCrafterModelLoader":
            assert set(node["widgets_values"][:2]) <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_twin_matches_ui_workflow(path, signatures):
    workflow = json.loads(path.read_text())
    api = json.loads((API_DIR / path.name).read_text())
    assert api == ui_to_api(workflow, signatures)


def test_workflows_differ_where_they_should():
    """(a) tunes and saves; (b)-(d) load saved weights; (c) edits with cfg 3; (d) and the evaluation, whose
    evaluation part can be of any length, sample in windows; the evaluation tunes and does not save."""
    api = {p.stem: json.loads((API_DIR / p.name).read_text()) for p in WORKFLOWS}

    def nodes_of(name, kind):
        return [n["inputs"] for n in api[name].values() if n["class_type"] == kind]

    assert nodes_of("posecrafter_one_shot", "PoseCrafterOneShotTuner")
    assert nodes_of("posecrafter_one_shot", "PoseCrafterSaveTuned")
    for name in ("posecrafter_from_tuned", "posecrafter_attribute_edit", "posecrafter_long_video"):
        assert nodes_of(name, "PoseCrafterLoadTuned") and not nodes_of(name, "PoseCrafterOneShotTuner")
    for name in ("posecrafter_evaluate", SMALL_WORLD):
        assert nodes_of(name, "PoseCrafterOneShotTuner") and not nodes_of(name, "PoseCrafterSaveTuned")
    for name in api:
        (sampler,) = nodes_of(name, "PoseCrafterTemporalSampler")
        assert sampler["cfg"] == (3.0 if name == "posecrafter_attribute_edit" else 1.0)
        assert ("negative" in sampler) == (name == "posecrafter_attribute_edit")
        assert sampler["context_length"] == (16 if name in ("posecrafter_long_video", "posecrafter_evaluate") else 0)


def api_sources(api, node_id):
    return [value[0] for value in api[node_id]["inputs"].values() if isinstance(value, list)]


def reaches(api, node_id, goal, around=()):
    """Whether a path of links leads from node goal to node_id without passing a node of around."""
    if node_id == goal:
        return True
    return node_id not in around and any(reaches(api, s, goal, around) for s in api_sources(api, node_id))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_training_frames_are_selected_before_anything_uses_them(path):
    """Select Frames (8 frames, the paper's main setting) sits between the training video and the frames,
    latents and poses that tuning, VAE Encode and reference selection use: no path from the training video
    reaches them around it. (Pose Retarget and, in cover mode, Select Frames itself read the poses of all
    training frames: that is what they are for.)"""
    api = json.loads((API_DIR / path.name).read_text())
    (select,) = [i for i, n in api.items() if n["class_type"] == "PoseCrafterSelectFrames"]
    assert api[select]["inputs"]["frames"] == 8
    (training,) = [i for i, n in api.items() if n["_meta"]["title"].startswith("Training video")]
    uses = {"VAEEncode": ("pixels",), "PoseCrafterOneShotTuner": ("latent", "pose"),
            "PoseCrafterReferenceFrameSelector": ("images", "latent", "training_pose")}
    for node_id, node in api.items():
        for name in uses.get(node["class_type"], ()):
            source = node["inputs"][name][0]
            assert reaches(api, source, training), (node["class_type"], name)
            assert not reaches(api, source, training, around={select}), f"{node['class_type']}.{name} skips Select Frames"


@pytest.mark.parametrize("path", RETARGETED, ids=lambda p: p.stem)
def test_driving_poses_are_retargeted_before_anything_uses_them(path):
    """Pose Retarget (bones) takes the driving video's DWPose poses and the training poses; its poses are the
    only driving poses that reference selection, the Pose Inserter (so latent editing and sampling) and
    Select Frames see. Its preview goes to a Preview Image, its report to a Preview as Text. (The evaluation
    workflow follows the person's own poses, as the paper's protocol does.) In the small world the poses come
    from pose files (Load Poses) instead of DWPose on the videos."""
    api = json.loads((API_DIR / path.name).read_text())
    (retarget,) = [i for i, n in api.items() if n["class_type"] == "PoseCrafterPoseRetarget"]
    inputs = api[retarget]["inputs"]
    assert (inputs["mode"], inputs["anchor"], inputs["smoothing"]) == ("bones", "auto", 0.0)
    target, trained = api[inputs["target_pose"][0]], api[inputs["training_pose"][0]]
    source = "PoseCrafterLoadPoses" if path.stem == SMALL_WORLD else "PoseCrafterDWPoseExtractor"
    assert target["class_type"] == trained["class_type"] == source
    driving, training = ("Driving poses", "Training poses") if path.stem == SMALL_WORLD else (
        "Driving video", "Training video")
    (driving,) = [i for i, n in api.items() if n["_meta"]["title"].startswith(driving)]
    (training,) = [i for i, n in api.items() if n["_meta"]["title"].startswith(training)]
    assert reaches(api, inputs["target_pose"][0], driving) and reaches(api, inputs["training_pose"][0], training)
    poses_users = {"PoseCrafterReferenceFrameSelector": "target_pose", "PoseCrafterPoseInserter": "target_pose"}
    for node_id, node in api.items():
        if node["class_type"] in poses_users:
            assert node["inputs"][poses_users[node["class_type"]]] == [retarget, 0], node["class_type"]
        if node["class_type"] == "PoseCrafterSelectFrames" and "target_pose" in node["inputs"]:
            assert node["inputs"]["target_pose"] == [retarget, 0]
        upstream = reaches(api, retarget, node_id)  # the driving video's DWPose and what feeds it
        if not upstream and node["class_type"].startswith("PoseCrafter"):
            assert not reaches(api, node_id, driving, around={retarget}), f"{node['class_type']} skips Pose Retarget"
    shown = {(n["class_type"], tuple(v)) for n in api.values() for v in n["inputs"].values() if isinstance(v, list)}
    assert ("PreviewImage", (retarget, 1)) in shown and ("PreviewAny", (retarget, 2)) in shown


def test_one_workflow_selects_training_frames_that_cover_the_target():
    """(d) shows Select Frames' cover mode: DWPose on all training frames feeds Select Frames and Pose Retarget
    (no cycle: Retarget measures the training body on all frames, Select Frames then picks from the retargeted
    targets); the kept frames' poses go to reference selection. The others keep the paper's uniform stride."""
    modes = {}
    for path in sorted(API_DIR.glob("*.json")):
        api = json.loads(path.read_text())
        (select,) = [i for i, n in api.items() if n["class_type"] == "PoseCrafterSelectFrames"]
        modes[path.stem] = api[select]["inputs"].get("mode", "uniform")
        if modes[path.stem] != "cover":
            continue
        inputs = api[select]["inputs"]
        (retarget,) = [i for i, n in api.items() if n["class_type"] == "PoseCrafterPoseRetarget"]
        all_poses = inputs["training_pose"][0]
        assert api[all_poses]["class_type"] == "PoseCrafterDWPoseExtractor"
        assert api[all_poses]["inputs"]["images"] == inputs["images"], "DWPose reads the frames Select Frames picks from"
        assert api[retarget]["inputs"]["training_pose"] == [all_poses, 0] and inputs["target_pose"] == [retarget, 0]
        (selector,) = [n["inputs"] for n in api.values() if n["class_type"] == "PoseCrafterReferenceFrameSelector"]
        assert selector["training_pose"] == [select, 1] and selector["images"] == [select, 0]
    assert modes == {"posecrafter_one_shot": "uniform", "posecrafter_from_tuned": "uniform",
                     "posecrafter_attribute_edit": "uniform", "posecrafter_long_video": "cover",
                     "posecrafter_evaluate": "uniform", SMALL_WORLD: "uniform"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_text_report_is_shown(path, signatures):
    """The frontend draws no text for a custom node's ui output: each STRING output goes to a Preview as Text."""
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    reports = [(node, slot) for node in nodes.values() if node["type"] != NOTE_NODE
               for slot, (_, kind) in enumerate(signatures[node["type"]]["outputs"]) if kind == "STRING"]
    expected = {"PoseCrafterReferenceFrameSelector", "PoseCrafterLatentEditor"}
    expected |= {"PoseCrafterEvaluate"} if path.stem == "posecrafter_evaluate" else {"PoseCrafterPoseRetarget"}
    expected |= {"PoseCrafterLoadPoses"} if path.stem == SMALL_WORLD else set()
    assert {node["type"] for node, _ in reports} == expected
    for node, slot in reports:
        targets = [nodes[links[link][3]]["type"] for link in node["outputs"][slot]["links"] or []]
        assert "PreviewAny" in targets, f"{path.name}: {node['type']} #{node['id']} output {slot} is not shown"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_do_not_overlap_on_the_canvas(path):
    """Node boxes (with the frontend's 30 px title bar above pos) are apart, so none hides another."""
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in json.loads(path.read_text())["nodes"]]
    overlapping = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                   if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
    assert not overlapping, f"{path.name}: nodes {overlapping} overlap"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_are_grouped_by_stage_and_the_saved_view_shows_them(path):
    """Every node except the note lies inside exactly one titled group ("1 Models ...", "2 Your video ...");
    groups do not overlap; the saved view (extra.ds) puts the whole graph on a 1920x1080 window's canvas,
    right of the sidebar and below the tab bar, at a zoom where the frontend still draws text (>= 0.6)."""
    workflow = json.loads(path.read_text())
    groups = workflow["groups"]
    assert [int(g["title"].split()[0]) for g in groups] == list(range(1, len(groups) + 1)) and len(groups) >= 4

    def inside(node, box):
        x, y, w, h = box
        return x <= node["pos"][0] and node["pos"][0] + node["size"][0] <= x + w and \
            y <= node["pos"][1] - 30 and node["pos"][1] + node["size"][1] <= y + h

    for node in workflow["nodes"]:
        homes = [g["title"] for g in groups if inside(node, g["bounding"])]
        assert len(homes) == (node["type"] != NOTE_NODE), (node["type"], node.get("title"), homes)
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            (ax, ay, aw, ah), (bx, by, bw, bh) = a["bounding"], b["bounding"]
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), (a["title"], b["title"])
    ds = workflow["extra"]["ds"]
    scale, (dx, dy) = ds["scale"], ds["offset"]
    boxes = [g["bounding"] for g in groups] + [[n["pos"][0], n["pos"][1] - 30, *n["size"]] for n in workflow["nodes"]]
    left, top = min((b[0] + dx) * scale for b in boxes), min((b[1] + dy) * scale for b in boxes)
    right, bottom = max((b[0] + b[2] + dx) * scale for b in boxes), max((b[1] + b[3] + dy) * scale for b in boxes)
    assert scale >= 0.6 and left >= 60 and top >= 60 and right <= 1900 and bottom <= 1040, (left, top, right, bottom)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_the_note_says_what_to_load_and_what_comes_out(path):
    (note,) = [n["widgets_values"][0] for n in json.loads(path.read_text())["nodes"] if n["type"] == NOTE_NODE]
    assert "**Load**" in note and "**Out**" in note
    loads_tuned = any(n["type"] == "PoseCrafterLoadTuned" for n in json.loads(path.read_text())["nodes"])
    makes_tuned = any(n["type"] == "PoseCrafterSaveTuned" for n in json.loads(path.read_text())["nodes"])
    if loads_tuned or makes_tuned:
        assert "posecrafter_tuned.safetensors" in note and ("(a)" in note), note


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_each_workflow_has_a_thumbnail(path):
    """The frontend's template browser shows workflows/NAME.jpg beside a custom node's workflows/NAME.json."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file() and thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", thumbnail.name


def test_the_tuner_shows_its_real_step_count_and_learning_rate():
    """Not the 0 = 'paper formula' / 'default' placeholders, which read as literal zeros on the canvas."""
    api = json.loads((API_DIR / "posecrafter_one_shot.json").read_text())
    (tuner,) = [n["inputs"] for n in api.values() if n["class_type"] == "PoseCrafterOneShotTuner"]
    assert (tuner["steps"], tuner["learning_rate"], tuner["update_rule"]) == (100, 0.003, "paper")


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "scripts" / "build_workflows.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_committed_workflows_are_what_the_generator_writes():
    """scripts/build_workflows.py writes every workflow and API twin from one description: edit it, not the JSON."""
    build = load_build_script()
    for target, data in build.outputs().items():
        if target.suffix == ".json":
            assert target.read_bytes() == data, f"{target.relative_to(ROOT)}: run python3 scripts/build_workflows.py"


def test_thumbnail_from_a_run_shows_its_video_frames_first_to_last_and_is_not_redrawn(tmp_path):
    """The small world's thumbnail is made from the video a real run saved (--thumbnail-from-run): 8 frames in
    2 rows of 4, spread evenly from the first to the last, under the title; the build leaves it alone."""
    import io

    import av
    import numpy as np
    from PIL import Image

    build = load_build_script()
    video = tmp_path / "run.mp4"
    with av.open(str(video), "w", format="mp4") as container:  # frame i is grey level 15 * i
        stream = container.add_stream("png", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
        for i in range(16):
            frame = np.full((32, 32, 3), 15 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    image = np.asarray(Image.open(io.BytesIO(build.video_thumbnail(video, "title"))).convert("L"))
    assert image.shape == (420, 640)
    side, gap, left = 149, 4, 16
    top = 70 + (420 - 70 - 16 - 2 * side - gap) // 2
    centres = [image[top + row * (side + gap) + side // 2, left + column * (side + gap) + side // 2]
               for row in range(2) for column in range(4)]
    expected = [15 * round(i * 15 / 7) for i in range(8)]  # frames 0, 2, 4, 6, 9, 11, 13, 15
    assert np.abs(np.array(centres, float) - expected).max() <= 3, centres
    with pytest.raises(SystemExit, match="has 16 frames: a thumbnail shows 20"):
        build.video_thumbnail(video, "title", columns=5, rows=4)
    assert not any(path.name == "posecrafter_small_world.jpg" for path in build.outputs(thumbnails=True))


def test_evaluate_workflow_follows_the_papers_protocol():
    """One clip: tune on frames of its first part, drive with the poses of the rest, and compare the generated
    frames with those real frames; the report and the plot are shown, the training frames go to CLIP-I."""
    api = json.loads((API_DIR / "posecrafter_evaluate.json").read_text())

    def only(kind):
        (node_id,) = [i for i, n in api.items() if n["class_type"] == kind]
        return node_id, api[node_id]["inputs"]

    def source(inputs, name):
        return inputs[name][0]

    parts = {api[i]["_meta"]["title"].split(":")[0]: api[i]["inputs"] for i, n in api.items()
             if n["class_type"] == "ImageFromBatch"}
    training, evaluation = parts["Training part"], parts["Evaluation part"]
    assert training["batch_index"] == 0 and evaluation["batch_index"] == training["length"] > 8
    assert evaluation["length"] == 4096, "the evaluation part runs to the end of the clip"
    assert source(training, "image") == source(evaluation, "image")
    evaluation_id = next(i for i, n in api.items() if n["_meta"]["title"].startswith("Evaluation part"))
    select_id, select = only("PoseCrafterSelectFrames")
    assert api[source(select, "images")]["_meta"]["title"].startswith("Training part")

    evaluate_id, evaluate = only("PoseCrafterEvaluate")
    assert api[source(evaluate, "images")]["class_type"] == "VAEDecode"
    assert source(evaluate, "ground_truth") == evaluation_id and source(evaluate, "training_images") == select_id
    assert api[source(evaluate, "clip_vision")]["class_type"] == "CLIPVisionLoader"
    target = api[source(evaluate, "target_pose")]
    assert target["class_type"] == "PoseCrafterDWPoseExtractor" and source(target["inputs"], "images") == evaluation_id
    _, inserter = only("PoseCrafterPoseInserter")
    assert source(inserter, "target_pose") == source(evaluate, "target_pose"), "the video follows the same poses"
    shown = {n["class_type"] for n in api.values() for value in n["inputs"].values() if value == [evaluate_id, 0]}
    assert shown == {"PreviewAny"}
    assert {n["class_type"] for n in api.values() for value in n["inputs"].values() if value == [evaluate_id, 1]} == {"PreviewImage"}


@pytest.mark.parametrize("path", sorted(API_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_titles_say_what_a_node_is_for_not_its_widget_values(path):
    """A title holding a value ("Frames 512x512", "Tuner (100 steps)") is wrong once the widget or --set changes it."""
    for node_id, node in json.loads(path.read_text()).items():
        title = node["_meta"]["title"]
        for name, value in node["inputs"].items():
            if isinstance(value, (list, bool)) or value == "":
                continue
            shown = {str(value), str(int(value))} if isinstance(value, float) and value.is_integer() else {str(value)}
            edge = r"[\d.]" if isinstance(value, (int, float)) else r"[\w.]"  # 512 shows in "512x512"
            for text in shown:
                assert not re.search(rf"(?<!{edge}){re.escape(text)}(?!{edge})", title, re.IGNORECASE), \
                    f"{path.name} node {node_id} '{title}' shows {name}={value!r}"


def test_small_world_workflow_runs_the_benchmarks_full_row_on_the_installed_files():
    """(f) names exactly the files benchmarks/world/install.py writes (and lists no downloads: they cannot be
    downloaded), with the settings of the outcome benchmark's 'full' row (benchmarks/world/cases.py), so its
    video can be scored like the benchmark's: 8 of the training frames, the paper's tuning, retargeting onto
    the poses of all training frames, the same DDIM steps, guidance 1, all frames at once, the source prompt."""
    from benchmarks.world import cases, install, models
    from posecrafter.tuning import paper_steps

    assert json.loads((ROOT / "workflows" / f"{SMALL_WORLD}.json").read_text())["models"] == []
    api = json.loads((API_DIR / f"{SMALL_WORLD}.json").read_text())

    def inputs(kind):
        return [n["inputs"] for n in api.values() if n["class_type"] == kind]

    assert [i["file"] for i in inputs("LoadVideo")] == [install.TRAINING_VIDEO, install.DRIVING_VIDEO]
    training_poses, driving_poses = inputs("PoseCrafterLoadPoses")
    assert (training_poses["file"], driving_poses["file"]) == (install.TRAINING_POSES, install.DRIVING_POSES)
    (loader,) = inputs("PoseCrafterModelLoader")
    assert loader == {"checkpoint": f"diffusers/{install.UNET}", "controlnet": install.CONTROLNET, "dtype": "fp32"}
    assert [i["vae_name"] for i in inputs("VAELoader")] == [install.VAE]
    assert [(i["clip_name"], i["type"]) for i in inputs("CLIPLoader")] == [(install.CLIP, "stable_diffusion")]
    assert {i["text"] for i in inputs("CLIPTextEncode")} == {install.SOURCE_PROMPT}
    assert install.SOURCE_PROMPT in models.PROMPTS
    (select,) = inputs("PoseCrafterSelectFrames")
    assert (select["frames"], select["mode"]) == (cases.TUNING_FRAMES, "uniform")
    (tuner,) = inputs("PoseCrafterOneShotTuner")
    assert (tuner["steps"], tuner["learning_rate"], tuner["update_rule"], tuner["seed"]) == (
        paper_steps(cases.TUNING_FRAMES), 0.003, "paper", 0)
    (retarget,) = inputs("PoseCrafterPoseRetarget")
    assert api[retarget["training_pose"][0]]["inputs"] == training_poses, "retargeted onto every training frame's pose"
    (inverter,), (sampler,) = inputs("PoseCrafterDDIMInverter"), inputs("PoseCrafterTemporalSampler")
    assert inverter["steps"] == sampler["steps"] == cases.STEPS
    assert (sampler["cfg"], sampler["context_length"], sampler["drop_inserted_frame"]) == (1.0, 0, True)
    (editor,) = inputs("PoseCrafterLatentEditor")
    assert (editor["edit_face"], editor["edit_hands"], editor["alpha"]) == (True, True, 1)
