"""The bundled workflows: they parse, use only PoseCrafter and core nodes, link compatible slots, their
widget values match each node's widgets, and each API-format twin says the same as its UI workflow."""
import json

import pytest

from tests.comfy_pack import ROOT, load_pack

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
API_DIR = ROOT / "workflows" / "api"

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
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# PoseCrafter combos listing the user's model files: their options depend on the machine.
FILE_COMBOS = {"checkpoint", "controlnet", "tuned_weights"}


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
        sig = signatures[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for name, _, is_widget, _ in sig["inputs"]:
            if is_widget:
                value = next(values)
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


def test_there_are_five_workflows_with_api_twins():
    names = {p.stem for p in WORKFLOWS}
    assert names == {"posecrafter_one_shot", "posecrafter_from_tuned", "posecrafter_attribute_edit",
                     "posecrafter_long_video", "posecrafter_evaluate"}
    assert {p.stem for p in API_DIR.glob("*.json")} == names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_nodes_and_links(path, signatures):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "duplicate node ids"
    assert workflow["last_node_id"] == max(nodes)
    assert workflow["last_link_id"] == max(link[0] for link in workflow["links"])
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
        widgets = [(name, kind) for name, kind, is_widget, _ in sig["inputs"] if is_widget]
        extra = sum(sig.get("extra_widget_values", {}).values()) + sig.get("frontend_widget_values", 0)
        expected = len(widgets) + extra
        values = node.get("widgets_values", [])
        assert len(values) == expected, f"{path.name}: {node['type']} #{node['id']} has {len(values)} widget values, expects {expected}"
        position = 0
        for name, kind in widgets:
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


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
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
    assert nodes_of("posecrafter_evaluate", "PoseCrafterOneShotTuner")
    assert not nodes_of("posecrafter_evaluate", "PoseCrafterSaveTuned")
    for name in api:
        (sampler,) = nodes_of(name, "PoseCrafterTemporalSampler")
        assert sampler["cfg"] == (3.0 if name == "posecrafter_attribute_edit" else 1.0)
        assert ("negative" in sampler) == (name == "posecrafter_attribute_edit")
        assert sampler["context_length"] == (16 if name in ("posecrafter_long_video", "posecrafter_evaluate") else 0)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_training_frames_are_selected_before_anything_uses_them(path):
    """Select Frames (8 frames, the paper's main setting) sits between the training video and every
    PoseCrafter node and VAE Encode: no path from the training video reaches them around it, except, in the
    evaluation workflow, through its evaluation part (the real frames the generated ones are compared with)."""
    api = json.loads((API_DIR / path.name).read_text())
    (select,) = [i for i, n in api.items() if n["class_type"] == "PoseCrafterSelectFrames"]
    evaluation_part = [i for i, n in api.items() if n["_meta"]["title"].startswith("Evaluation part")]
    assert len(evaluation_part) == (path.stem == "posecrafter_evaluate")
    assert api[select]["inputs"]["frames"] == 8
    (training,) = [i for i, n in api.items() if n["_meta"]["title"].startswith("Training video")]

    def sources(node_id):
        return [value[0] for value in api[node_id]["inputs"].values() if isinstance(value, list)]

    def reaches_training_video(node_id, through_select):
        if node_id == training:
            return True
        if node_id in evaluation_part or (node_id == select and not through_select):
            return False
        return any(reaches_training_video(s, through_select) for s in sources(node_id))

    users = [i for i, n in api.items() if n["class_type"].startswith("PoseCrafter") or n["class_type"] == "VAEEncode"]
    assert not [i for i in users if reaches_training_video(i, through_select=False)]
    (selector,) = [i for i, n in api.items() if n["class_type"] == "PoseCrafterReferenceFrameSelector"]
    for name in ("images", "latent", "training_pose"):
        assert reaches_training_video(api[selector]["inputs"][name][0], through_select=True), name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_text_report_is_shown(path, signatures):
    """The frontend draws no text for a custom node's ui output: each STRING output goes to a Preview as Text."""
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    reports = [(node, slot) for node in nodes.values()
               for slot, (_, kind) in enumerate(signatures[node["type"]]["outputs"]) if kind == "STRING"]
    expected = {"PoseCrafterReferenceFrameSelector", "PoseCrafterLatentEditor"}
    assert {node["type"] for node, _ in reports} == expected | ({"PoseCrafterEvaluate"} if "evaluate" in path.stem else set())
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
