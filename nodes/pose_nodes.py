"""Pose nodes: DWPose extraction, pose files, skeleton rendering, reference-frame selection and pose insertion."""
import json
import os

from ..posecrafter import dwpose, pose_files, reference, skeleton
from ..posecrafter.pose import from_pose_keypoint, interpolate_empty_frames, to_pose_keypoint
from . import _comfy
from .common import CATEGORY, check_frame_count, latent_samples, validation_result


class DWPoseExtractor:
    DESCRIPTION = (
        "Whole-body DWPose (body, face, hands) on every frame. Emits POSE_KEYPOINT in the "
        "comfyui_controlnet_aux format and the skeleton drawings the OpenPose ControlNet expects."
    )
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose", "skeleton")
    OUTPUT_TOOLTIPS = ("One pose per frame (the most confident person).", "The poses drawn at the frames' size.")
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video frames (one person in view)."}),
                "fill_gaps": ("BOOLEAN", {"default": False, "tooltip": "When nobody is detected in a frame, interpolate the pose from the neighbouring frames instead of failing."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, images=None):
        # ComfyUI reports a message only against the inputs this signature names: with none named, a
        # missing model file would pass validation and fail only when the node runs.
        return dwpose_files_found()

    def extract(self, images, fill_gaps):
        result = run_dwpose(images)
        poses, missing = result.poses, result.missing_frames
        if len(missing) == images.shape[0]:
            raise ValueError(
                f"'images': no person detected in any of the {images.shape[0]} frames"
                + (", so fill_gaps has no frame to fill the others from" if fill_gaps else "")
                + ": use a clip where the whole person is in view"
            )
        if missing and not fill_gaps:
            frames = ", ".join(str(i) for i in missing)
            raise ValueError(
                f"'images': no person detected in frame(s) {frames} of {images.shape[0]}: use a clip where the "
                "person is visible in every frame, or turn on fill_gaps"
            )
        if missing:
            poses = interpolate_empty_frames(poses)
            _comfy.log.info("PoseCrafter DWPose: filled frames %s from their neighbours", missing)
        pose = to_pose_keypoint(poses)
        drawn = skeleton.render_skeleton_images(poses, images.shape[2], images.shape[1])
        return {"ui": {"openpose_json": [json.dumps(pose)]}, "result": (pose, drawn)}


def dwpose_files_found():
    """True when both DWPose model files are found, else the message naming the missing one and the folders
    searched (what VALIDATE_INPUTS returns)."""
    for name in (dwpose.DETECTOR_FILE, dwpose.POSE_MODEL_FILE):
        try:
            dwpose.find_model_file(name, _comfy.dwpose_dirs())
        except ValueError as err:
            # The engine's message starts with its argument's name, which means nothing in the UI.
            return str(err).removeprefix("model_dirs: ")
    return True


def run_dwpose(images):
    """DWPose on an IMAGE batch with a progress bar (and Cancel): the engine's Extraction (frames with
    nobody in them listed, not filled)."""
    progress = _comfy.Progress(images.shape[0], "PoseCrafter DWPose")
    try:
        return _extractor(_comfy.dwpose_dirs()).extract(images, callback=lambda done, total: progress.update(done))
    finally:
        progress.close()


_extractors = {}


def _extractor(dirs):
    """One onnxruntime extractor per set of model files, kept until tuning or sampling needs the GPU (a
    workflow extracts the training and the driving video's poses; loading the sessions is slow)."""
    key = tuple(str(dwpose.find_model_file(name, dirs)) for name in (dwpose.DETECTOR_FILE, dwpose.POSE_MODEL_FILE))
    if key not in _extractors:
        _extractors.clear()
        _extractors[key] = dwpose.DWPoseExtractor(dirs)
    return _extractors[key]


def release_dwpose_sessions():
    """Drop the cached onnxruntime sessions, and with them their GPU memory, which ComfyUI cannot free."""
    _extractors.clear()


class LoadPoses:
    DESCRIPTION = (
        "Loads a pose sequence (POSE_KEYPOINT) from ComfyUI's input folder: the JSON that PoseCrafter Save Poses "
        "and comfyui_controlnet_aux's pose saver write (a list of frames), one frame's JSON, or a folder or zip of "
        "OpenPose *_keypoints.json files (one per frame, in the natural order of their names). Frames with nobody "
        "in them are kept, and listed in the report."
    )
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ("POSE_KEYPOINT", "STRING")
    RETURN_NAMES = ("pose", "report")
    OUTPUT_TOOLTIPS = ("One pose per selected frame.", "Frames read and kept, the canvas, and the frames with nobody in them.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        folder = _comfy.input_dir()
        names = pose_files.list_pose_files(folder) if folder and os.path.isdir(folder) else []
        return {
            "required": {
                "file": (names, {"tooltip": "A .json or .zip file, or a folder of OpenPose *_keypoints.json files, in ComfyUI's input folder."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 16384, "tooltip": "Rescale the poses to a canvas of this width (with height; 0 and 0 keep the file's canvas). OpenPose files record no canvas: give the size of the frames their poses were detected on."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 16384, "tooltip": "Canvas height, with width."}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip": "Frames of the file to skip before the first one loaded."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000, "tooltip": "Load every n-th frame from there (2: half the frame rate)."}),
                "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip": "At most this many frames (0 = all)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, file=None):
        # Declaring 'file' turns off ComfyUI's own check that it is a listed name: pose_source refuses the rest.
        return file is None or validation_result(lambda: pose_source(file))

    @classmethod
    def IS_CHANGED(cls, file=None, **_):
        # A file or folder of the same name may be replaced (an upload, OpenPose run again): reload when it changes.
        try:
            path = pose_source(file)
        except ValueError:
            return ""
        paths = [os.path.join(path, f) for f in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
        return " ".join(f"{os.path.basename(p)}:{os.stat(p).st_mtime_ns}:{os.stat(p).st_size}" for p in paths)

    def load(self, file, width, height, skip_first_frames, select_every_nth, frame_load_cap):
        canvas = canvas_size(width, height)
        frames = pose_files.read_pose_file(pose_source(file), file, canvas)
        selected = pose_files.select_frames(frames, skip_first_frames, select_every_nth, frame_load_cap, file)
        poses = from_pose_keypoint(selected, file)
        report = (f"{file}: {len(selected)} of {len(frames)} frames, canvas {frames[0]['canvas_width']}x"
                  f"{frames[0]['canvas_height']}")
        if canvas and any((f["canvas_width"], f["canvas_height"]) != canvas for f in selected):
            poses = poses.on_canvas(*canvas)
            selected = to_pose_keypoint(poses)
            report += f", rescaled to {canvas[0]}x{canvas[1]} (one person per frame, the most confident)"
        if poses.empty_frames:
            report += (f"; nobody in frame(s) {', '.join(map(str, poses.empty_frames))} of the {len(selected)} "
                       "loaded (kept as empty poses)")
        _comfy.log.info("PoseCrafter Load Poses: %s", report)
        return {"ui": {"text": [report]}, "result": (selected, report)}


def pose_source(name):
    """Full path of a pose file or folder listed by Load Poses; names outside the input folder are refused."""
    folder = _comfy.input_dir()
    if not folder:
        raise ValueError("no input folder is configured (outside ComfyUI set POSECRAFTER_INPUT_DIR)")
    if not name:
        raise ValueError(f"'file': no pose file chosen; put one into ComfyUI's input folder ({folder}) or upload it, "
                         "and pick it from the list")
    path = _comfy.path_inside(folder, name)
    if path is None:
        raise ValueError(f"'file' {name!r} is not inside ComfyUI's input folder ({folder}): pick a file from the list")
    if not os.path.exists(path):
        raise ValueError(f"'file' {name!r} was not found in ComfyUI's input folder ({folder}): put the pose file "
                         "there (or upload it) and pick it from the list")
    return path


def canvas_size(width, height):
    """(width, height) to rescale to, None for 0 x 0 (the file's canvas)."""
    if (width, height) == (0, 0):
        return None
    if not (width > 0 and height > 0):
        raise ValueError(f"'width' and 'height' are {width} and {height}: give both (the canvas to rescale to, or for "
                         "OpenPose files the size of the frames the poses were detected on), or 0 and 0")
    return width, height


class SavePoses:
    DESCRIPTION = (
        "Saves a pose sequence (POSE_KEYPOINT) to ComfyUI's output folder as a JSON list of frames, numbered like "
        "ComfyUI's savers (poses/posecrafter_00001_.json). PoseCrafter Load Poses reads it back exactly, as do "
        "other packs that read comfyui_controlnet_aux's pose JSON."
    )
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose": ("POSE_KEYPOINT", {"tooltip": "The poses to save, e.g. from a DWPose Extractor."}),
                "filename_prefix": ("STRING", {"default": "poses/posecrafter", "tooltip": "File name in ComfyUI's output folder, optionally after subfolders; _00001_.json (the next free number) is added."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return filename_prefix is None or validation_result(lambda: saved_prefix(filename_prefix))

    def save(self, pose, filename_prefix):
        path = pose_files.write_pose_file(pose, saved_prefix(filename_prefix))
        name = os.path.relpath(path, _comfy.output_dir()).replace(os.sep, "/")
        _comfy.log.info("PoseCrafter: saved %d poses to %s", len(pose), path)
        return {"ui": {"text": [name]}}


def saved_prefix(filename_prefix):
    """The output-folder path of a Save Poses file name prefix; prefixes leading out of the folder are refused."""
    folder = _comfy.output_dir()
    if not folder:
        raise ValueError("no output folder is configured (outside ComfyUI set POSECRAFTER_OUTPUT_DIR)")
    path = _comfy.path_inside(folder, filename_prefix.strip())
    if path is None or filename_prefix.strip().endswith("/"):
        raise ValueError(f"'filename_prefix' {filename_prefix!r} must be a file name inside the output folder, "
                         "optionally after subfolders (poses/dance), without '..' or a leading '/'")
    return path


class PoseRender:
    DESCRIPTION = "Draws POSE_KEYPOINT poses (from any source) as OpenPose skeleton images."
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("skeleton",)
    OUTPUT_TOOLTIPS = ("One skeleton image per pose.",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose": ("POSE_KEYPOINT", {"tooltip": "Poses to draw, one per frame."}),
                "width": ("INT", {"default": 512, "min": 8, "max": 8192, "step": 8, "tooltip": "Output width in pixels; coordinates are scaled from the pose's canvas."}),
                "height": ("INT", {"default": 512, "min": 8, "max": 8192, "step": 8, "tooltip": "Output height in pixels."}),
            }
        }

    def render(self, pose, width, height):
        return (skeleton.render_skeleton_images(from_pose_keypoint(pose, "pose"), width, height),)


class ReferenceFrameSelector:
    DESCRIPTION = (
        "Picks the training frame whose pose is closest to the whole target pose sequence (paper Eq. 5) and "
        "reports Video-SIM, how well the training clip covers the target motion (lower is better). Distance "
        "'visible' compares only the points both poses show, robust to detection noise; 'paper' is Eq. 5's L2."
    )
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ("LATENT", "IMAGE", "POSE_KEYPOINT", "INT", "STRING")
    RETURN_NAMES = ("latent", "image", "pose", "index", "report")
    OUTPUT_TOOLTIPS = (
        "The reference frame's latent (1 frame).",
        "The reference frame.",
        "The reference frame's pose.",
        "Index of the reference frame in the training clip.",
        "Distances and Video-SIM.",
    )
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The training frames."}),
                "latent": ("LATENT", {"tooltip": "The training frames encoded by VAE Encode."}),
                "training_pose": ("POSE_KEYPOINT", {"tooltip": "The training frames' poses."}),
                "target_pose": ("POSE_KEYPOINT", {"tooltip": "The pose sequence to follow (e.g. from the driving video)."}),
            },
            "optional": {
                "distance": (list(reference.DISTANCES), {"default": "visible", "tooltip": "How two poses are compared. visible: mean distance of the points visible in either pose, each capped at 5% of the canvas (a point seen in only one pose counts as capped), per body part; robust to DWPose's jitter and flickering points. paper: the L2 norm of Eq. 5 with -1 for missing points, where one flickering point outweighs the whole pose."}),
            },
        }

    def select(self, images, latent, training_pose, target_pose, distance="visible"):
        samples = latent_samples(latent, "latent")
        check_frame_count(images.shape[0], samples.shape[0], "images", "latent")
        training = from_pose_keypoint(training_pose, "training_pose")
        target = from_pose_keypoint(target_pose, "target_pose")
        check_frame_count(len(training), samples.shape[0], "training_pose", "latent")
        if distance not in reference.DISTANCES:
            raise ValueError(f"'distance' is {distance!r}: use one of {', '.join(reference.DISTANCES)}")
        choice = reference.select_reference_frame(training, target, distance)
        index = choice.index
        sim = reference.video_sim(training, target, distance)
        report = (
            f"reference frame {index} of {len(training)} (sum of '{distance}' pose distances "
            f"{choice.distances[index]:.4f}); Video-SIM {sim:.4f} over {len(target)} target poses"
        )
        _comfy.log.info("PoseCrafter: %s", report)
        return (
            {"samples": samples[index : index + 1]},
            images[index : index + 1].clone(),
            to_pose_keypoint(training.frame(index)),
            index,
            report,
        )


class PoseInserter:
    DESCRIPTION = (
        "Inserts the reference pose into the target sequence at the key-frame position (M poses -> M+1), "
        "marked so the Temporal Sampler can drop the inserted frame afterwards."
    )
    CATEGORY = CATEGORY + "/pose"
    RETURN_TYPES = ("POSE_KEYPOINT",)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("The M+1 poses with the reference at the chosen position.",)
    FUNCTION = "insert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "target_pose": ("POSE_KEYPOINT", {"tooltip": "The M target poses."}),
                "reference_pose": ("POSE_KEYPOINT", {"tooltip": "The reference frame's pose (Reference Frame Selector)."}),
                "position": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Where the reference goes, 0..M; it becomes the key frame. The paper's code uses 0."}),
            }
        }

    def insert(self, target_pose, reference_pose, position):
        target = from_pose_keypoint(target_pose, "target_pose")
        reference_poses = from_pose_keypoint(reference_pose, "reference_pose")
        if position > len(target):
            raise ValueError(
                f"'position' is {position} but there are only {len(target)} target poses: use 0..{len(target)}"
            )
        if len(reference_poses) != 1:
            raise ValueError(f"'reference_pose' must hold 1 pose, got {len(reference_poses)}: connect the Reference Frame Selector's pose")
        inserted = reference.insert_reference_pose(target, reference_poses, position)
        return (to_pose_keypoint(inserted),)


NODE_CLASS_MAPPINGS = {
    "PoseCrafterDWPoseExtractor": DWPoseExtractor,
    "PoseCrafterLoadPoses": LoadPoses,
    "PoseCrafterSavePoses": SavePoses,
    "PoseCrafterPoseRender": PoseRender,
    "PoseCrafterReferenceFrameSelector": ReferenceFrameSelector,
    "PoseCrafterPoseInserter": PoseInserter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PoseCrafterDWPoseExtractor": "PoseCrafter DWPose Extractor",
    "PoseCrafterLoadPoses": "PoseCrafter Load Poses",
    "PoseCrafterSavePoses": "PoseCrafter Save Poses",
    "PoseCrafterPoseRender": "PoseCrafter Pose Render",
    "PoseCrafterReferenceFrameSelector": "PoseCrafter Reference Frame Selector",
    "PoseCrafterPoseInserter": "PoseCrafter Pose Inserter",
}
