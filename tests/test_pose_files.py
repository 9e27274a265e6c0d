"""Pose files: the formats Load Poses reads, what Save Poses writes, and the messages for files it cannot read."""
import json
import zipfile

import numpy as np
import pytest

from posecrafter.pose import BODY, FEET, INSERTED_REFERENCE_KEY, from_pose_keypoint, to_pose_keypoint
from posecrafter.pose_files import list_pose_files, read_pose_file, select_frames, write_pose_file
from tests.comfy_pack import load_pack
from tests.test_pose import SAMPLE, load_sample, random_poses


def openpose_person(rng, body_points=18, width=640, height=480):
    """One person as OpenPose writes it: pixel coordinates and real confidences, 70-point face, 21-point hands."""
    def part(count):
        xy = rng.uniform(0.3, 0.7, (count, 2)) * [width, height]
        return [float(v) for (x, y), c in zip(xy, rng.uniform(0.5, 1, count)) for v in (x, y, c)]
    return {"person_id": [-1], "pose_keypoints_2d": part(body_points), "face_keypoints_2d": part(70),
            "hand_left_keypoints_2d": part(21), "hand_right_keypoints_2d": part(21),
            "pose_keypoints_3d": [], "face_keypoints_3d": []}


def openpose_frames(count, body_points=18):
    rng = np.random.default_rng(1)
    return [{"version": 1.3, "people": [openpose_person(rng, body_points)]} for _ in range(count)]


def write_openpose(folder, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, names):
        (folder / name).write_text(json.dumps(frame))


# Frame f is written as clip_<f>_keypoints.json: a plain sort would put clip_10 before clip_2.
NAMES = [f"clip_{f}_keypoints.json" for f in range(12)]


def test_our_json_list_and_controlnet_aux_json_read_back_unchanged(tmp_path):
    ours = to_pose_keypoint(random_poses(frames=4))
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    assert read_pose_file(str(tmp_path / "ours.json"), "ours.json") == ours
    assert read_pose_file(str(SAMPLE), "aux.json") == load_sample()


def test_a_single_frame_reads_as_a_one_frame_sequence(tmp_path):
    frame = to_pose_keypoint(random_poses(frames=1))[0]
    (tmp_path / "frame.json").write_text(json.dumps(frame))
    assert read_pose_file(str(tmp_path / "frame.json"), "frame.json") == [frame]


@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_openpose_keypoint_files_read_in_natural_order_on_the_given_canvas(tmp_path, packed):
    frames = openpose_frames(12)
    write_openpose(tmp_path / "clip", frames, NAMES)
    source = tmp_path / "clip"
    if packed == "zip":
        source = tmp_path / "clip.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for name in reversed(NAMES):  # stored out of order: the names decide
                archive.write(tmp_path / "clip" / name, f"clip/{name}")
            archive.writestr("clip/readme.txt", "not a frame")
    read = read_pose_file(str(source), "clip", canvas_size=(640, 480))
    assert [f["people"] for f in read] == [f["people"] for f in frames]
    assert all((f["canvas_width"], f["canvas_height"]) == (640, 480) for f in read)
    poses = from_pose_keypoint(read)
    assert np.allclose(poses.points[11, 0], frames[11]["people"][0]["pose_keypoints_2d"][:2])

    with pytest.raises(ValueError, match=r"clip/clip_0_keypoints.json: has no canvas_width/canvas_height \(OpenPose"):
        read_pose_file(str(source), "clip")


def test_openpose_body_25_becomes_the_coco_18_body_and_the_feet(tmp_path):
    (frame,) = openpose_frames(1, body_points=25)
    write_openpose(tmp_path / "run", [frame], ["run_000000000000_keypoints.json"])
    poses = from_pose_keypoint(read_pose_file(str(tmp_path / "run"), "run", canvas_size=(640, 480)))
    body_25 = np.reshape(frame["people"][0]["pose_keypoints_2d"], (25, 3))
    # BODY_25: 8 mid-hip, 9-14 the legs (COCO-18 8-13), 15-18 eyes and ears (COCO-18 14-17), 19-24 the feet.
    assert np.allclose(poses.points[0, BODY][:8], body_25[:8, :2])
    assert np.allclose(poses.points[0, BODY][8:], body_25[9:19, :2])
    assert np.allclose(poses.points[0, FEET], body_25[19:, :2])
    assert np.allclose(poses.scores[0, FEET], body_25[19:, 2])


def test_frames_with_nobody_in_them_are_kept(tmp_path):
    frames = to_pose_keypoint(random_poses(frames=3))
    frames[1]["people"] = []
    (tmp_path / "gap.json").write_text(json.dumps(frames))
    read = read_pose_file(str(tmp_path / "gap.json"), "gap.json")
    assert read == frames and from_pose_keypoint(read).empty_frames == [1]


def bad_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize("content, message", [
    ('[{"people": [], "canvas_width": 64, "canvas_height": 64},', r"bad.json: is not valid JSON \(Expecting value at line 1, column 58\); expected pose JSON"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "bad.json: is not a text file; expected pose JSON"),
    ("[]", "bad.json: holds an empty list, no frames"),
    ('{"nodes": [], "links": [], "version": 0.4}', r"bad.json: expected pose JSON: a list of frames .*; got a dict with keys nodes, links, version"),
    ("[1, 2]", r"bad.json\[0\]: expected pose JSON.*; frame 0 is int 1"),
    ("42", "bad.json: expected pose JSON.*; got int 42"),
])
def test_files_in_none_of_the_formats_are_refused_naming_the_file(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read_pose_file(bad_file(tmp_path, "bad.json", content), "bad.json")


def test_keypoint_arrays_of_the_wrong_length_name_the_file_and_the_frame(tmp_path):
    frames = to_pose_keypoint(random_poses(frames=3))
    frames[2]["people"][0]["pose_keypoints_2d"] = frames[2]["people"][0]["pose_keypoints_2d"][:51]
    path = bad_file(tmp_path, "short.json", json.dumps(frames))
    with pytest.raises(ValueError, match=r"short.json\[2\].people\[0\].pose_keypoints_2d: expected 54 numbers .* got 51"):
        read_pose_file(path, "short.json")

    openpose = openpose_frames(3)
    openpose[1]["people"][0]["hand_left_keypoints_2d"] = openpose[1]["people"][0]["hand_left_keypoints_2d"][:60]
    write_openpose(tmp_path / "clip", openpose, NAMES)
    with pytest.raises(ValueError, match=r"clip/clip_1_keypoints.json\[0\].people\[0\].hand_left_keypoints_2d: expected 63"):
        read_pose_file(str(tmp_path / "clip"), "clip", canvas_size=(640, 480))


def test_zips_and_folders_without_keypoint_files_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        archive.writestr("a.png", b"\x89PNG")
        archive.writestr("poses.json", "[]")
    with pytest.raises(ValueError, match=r"photos.zip: this zip holds no OpenPose \*_keypoints.json files"):
        read_pose_file(str(tmp_path / "photos.zip"), "photos.zip", canvas_size=(64, 64))
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as archive:  # stored uncompressed: the frame's bytes show
        archive.writestr("f_0_keypoints.json", json.dumps(openpose_frames(1)[0]))
    data = (tmp_path / "broken.zip").read_bytes()
    (tmp_path / "broken.zip").write_bytes(data.replace(b'"people"', b'"peoplE"'))
    with pytest.raises(ValueError, match=r"broken.zip: this zip cannot be read \(Bad CRC-32"):
        read_pose_file(str(tmp_path / "broken.zip"), "broken.zip", canvas_size=(64, 64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: this folder holds no OpenPose \*_keypoints.json files"):
        read_pose_file(str(tmp_path / "empty"), "empty", canvas_size=(64, 64))
    write_openpose(tmp_path / "clip", ["not a frame"], NAMES)
    with pytest.raises(ValueError, match=r"clip/clip_0_keypoints.json: expected one OpenPose frame .* got str"):
        read_pose_file(str(tmp_path / "clip"), "clip", canvas_size=(64, 64))


def test_frame_selection():
    frames = list(range(10))
    assert select_frames(frames, 0, 1, 0, "x") == frames
    assert select_frames(frames, 1, 3, 0, "x") == [1, 4, 7]
    assert select_frames(frames, 1, 3, 2, "x") == [1, 4]
    with pytest.raises(ValueError, match="x: skip_first_frames 10 leaves none of its 10 frames; use 0..9"):
        select_frames(frames, 10, 1, 0, "x")


def test_saved_files_are_numbered_and_nothing_is_written_for_bad_poses(tmp_path):
    frames = to_pose_keypoint(random_poses(frames=2))
    first = write_pose_file(frames, str(tmp_path / "poses" / "dance"))
    second = write_pose_file(frames, str(tmp_path / "poses" / "dance"))
    assert [first, second] == [str(tmp_path / "poses" / f"dance_0000{i}_.json") for i in (1, 2)]
    assert json.loads((tmp_path / "poses" / "dance_00002_.json").read_text()) == frames

    frames[1]["people"][0]["face_keypoints_2d"] = "eyes"
    with pytest.raises(ValueError, match=r"pose\[1\].people\[0\].face_keypoints_2d"):
        write_pose_file(frames, str(tmp_path / "bad" / "dance"))
    assert not (tmp_path / "bad").exists()


def test_pose_files_are_listed_with_keypoint_folders_once(tmp_path):
    (tmp_path / "training.mp4").write_bytes(b"")
    (tmp_path / "moves_10.json").write_text("[]")
    (tmp_path / "moves_9.json").write_text("[]")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "run.zip").write_bytes(b"")
    write_openpose(tmp_path / "clips" / "walk", openpose_frames(2), NAMES)
    assert list_pose_files(str(tmp_path)) == ["clips/run.zip", "clips/walk", "moves_9.json", "moves_10.json"]


# The nodes, with POSECRAFTER_INPUT_DIR / POSECRAFTER_OUTPUT_DIR standing in for ComfyUI's folders.

@pytest.fixture()
def folders(tmp_path, monkeypatch):
    for name in ("input", "output"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"POSECRAFTER_{name.upper()}_DIR", str(tmp_path / name))
    return tmp_path / "input", tmp_path / "output"


def node(name):
    return load_pack().NODE_CLASS_MAPPINGS[name]


def load(file, width=0, height=0, skip=0, nth=1, cap=0):
    return node("PoseCrafterLoadPoses")().load(file, width, height, skip, nth, cap)["result"]


def test_save_then_load_gives_back_exactly_the_same_poses(folders):
    input_dir, output_dir = folders
    ours = to_pose_keypoint(random_poses(frames=3))
    ours[1][INSERTED_REFERENCE_KEY] = True
    for pose in (ours, load_sample()):  # the sample has two people and null parts
        shown = node("PoseCrafterSavePoses")().save(pose, "poses/dance")["ui"]["text"][0]
        (input_dir / "dance.json").write_bytes((output_dir / shown).read_bytes())
        loaded, _ = load("dance.json")
        assert loaded == pose
    assert shown == "poses/dance_00002_.json"
    assert node("PoseCrafterLoadPoses").INPUT_TYPES()["required"]["file"][0] == ["dance.json"]


def test_load_selects_frames_rescales_and_reports_empty_frames(folders):
    input_dir, _ = folders
    frames = to_pose_keypoint(random_poses(frames=6, width=640, height=480))
    frames[4]["people"] = []
    (input_dir / "moves.json").write_text(json.dumps(frames))
    loaded, report = load("moves.json", 320, 240, skip=2, nth=2)
    assert len(loaded) == 2 and (loaded[0]["canvas_width"], loaded[0]["canvas_height"]) == (320, 240)
    expected = from_pose_keypoint([frames[2]]).points * 0.5
    assert np.allclose(from_pose_keypoint(loaded).points[0][from_pose_keypoint(loaded).visible[0]],
                       expected[0][from_pose_keypoint([frames[2]]).visible[0]])
    assert report == ("moves.json: 2 of 6 frames, canvas 640x480, rescaled to 320x240 (one person per frame, the "
                      "most confident); nobody in frame(s) 1 of the 2 loaded (kept as empty poses)")
    assert load("moves.json", 640, 480)[0] == frames  # already on that canvas: unchanged
    with pytest.raises(ValueError, match="'width' and 'height' are 320 and 0: give both"):
        load("moves.json", 320, 0)


def test_load_refuses_files_outside_the_input_folder_and_names_missing_ones(folders, tmp_path):
    input_dir, _ = folders
    (tmp_path / "secret.json").write_text(json.dumps(load_sample()))
    cls = node("PoseCrafterLoadPoses")
    for name in ("../secret.json", str(tmp_path / "secret.json")):
        message = cls.VALIDATE_INPUTS(file=name)
        assert message.startswith(f"'file' {name!r} is not inside ComfyUI's input folder ({input_dir})"), message
        with pytest.raises(ValueError, match="is not inside ComfyUI's input folder"):
            load(name)
    assert cls.VALIDATE_INPUTS(file="").startswith("'file': no pose file chosen; put one into ComfyUI's input folder")
    assert cls.VALIDATE_INPUTS(file="gone.json") == (
        f"'file' 'gone.json' was not found in ComfyUI's input folder ({input_dir}): put the pose file there (or "
        "upload it) and pick it from the list")


def test_load_reruns_when_the_file_changes(folders):
    input_dir, _ = folders
    path = input_dir / "moves.json"
    path.write_text(json.dumps(load_sample()))
    before = node("PoseCrafterLoadPoses").IS_CHANGED(file="moves.json")
    path.write_text(json.dumps(load_sample()[:1]))
    assert node("PoseCrafterLoadPoses").IS_CHANGED(file="moves.json") != before


def test_save_refuses_names_outside_the_output_folder_and_writes_nothing_for_bad_poses(folders):
    _, output_dir = folders
    cls = node("PoseCrafterSavePoses")
    for prefix in ("../poses", "/tmp/poses", "poses/", " "):
        assert "must be a file name inside the output folder" in cls.VALIDATE_INPUTS(filename_prefix=prefix), prefix
    assert cls.VALIDATE_INPUTS(filename_prefix="poses/dance") is True
    with pytest.raises(ValueError, match="pose: has no frames"):
        cls().save([], "poses/dance")
    assert list(output_dir.iterdir()) == []


def test_the_upload_button_script_is_served_and_names_the_node_and_its_file_input():
    """web/load_poses_upload.js finds the node and its file list by name: a rename must change it too."""
    from tests.comfy_pack import ROOT

    pack = load_pack()
    script = (ROOT / pack.WEB_DIRECTORY / "load_poses_upload.js").read_text()
    assert 'const NODE = "PoseCrafterLoadPoses";' in script and "PoseCrafterLoadPoses" in pack.NODE_CLASS_MAPPINGS
    assert 'const FILE_INPUT = "file";' in script and "file" in node("PoseCrafterLoadPoses").INPUT_TYPES()["required"]
