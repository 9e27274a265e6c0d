"""The small world (benchmarks/world): deterministic people, rooms and motions, the renderer's ground truth, the
scores, the fixed text encoder, the training script's resume and refusals."""
import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

import benchmarks.world as world
from benchmarks.world import models, train
from benchmarks.world.cases import ATTRIBUTE_EDIT_GUIDANCE
from benchmarks.world.people import LABELS, SHIRT_COLOURS
from posecrafter.schedulers import SCHEDULER_CONFIG
from tests.comfy_pack import ROOT

SIZE = 128


def test_public_interface_is_exactly_the_documented_one():
    assert sorted(world.__all__) == sorted(
        ["MOTIONS", "ABLATIONS", "identity", "background", "motion", "render", "score", "run_case"])
    assert {"ground_truth", "base", "no_tuning", "full"} <= set(world.ABLATIONS)
    assert len(world.MOTIONS) >= 5


def test_same_seed_same_world_and_other_seeds_differ():
    assert world.identity(7) == world.identity(7)
    assert world.identity(7) != world.identity(8)
    np.testing.assert_array_equal(world.background(7), world.background(7))
    assert np.abs(world.background(7).astype(int) - world.background(8)).mean() > 10
    for kind in world.MOTIONS:
        a, b = world.motion(kind, 6, 3, SIZE), world.motion(kind, 6, 3, SIZE)
        np.testing.assert_array_equal(a.points, b.points)
        assert np.abs(a.points - world.motion(kind, 6, 4, SIZE).points).max() > 1
        assert np.abs(np.diff(a.points, axis=0)).max() > 0.05, f"{kind}: the person does not move"
        inside = (a.points >= 0) & (a.points < SIZE)
        assert inside.all(), f"{kind}: points leave the frame"


def test_render_paints_every_part_where_the_pose_puts_it():
    poses = world.motion("wave", 4, 11, SIZE)
    person, room = world.identity(11), world.background(11)
    frames, labels = world.render(poses, person, room, with_labels=True)
    assert frames.shape == (4, SIZE, SIZE, 3) and frames.dtype == np.uint8
    present = {LABELS[i] for i in np.unique(labels)}
    assert present == set(LABELS) - ({"hair"} - present)  # every part is drawn (hair always, in fact)
    untouched = labels == 0
    np.testing.assert_array_equal(frames[untouched], np.broadcast_to(room, frames.shape)[untouched])
    # the shirt's pixels are the named colour or its stripe colour
    torso = frames[labels == LABELS.index("torso")]
    colours = {tuple(c) for c in torso}
    assert colours == {person.shirt_rgb, person.stripe_rgb}
    # the face features sit on the face points
    eyes = poses.points[0, 24 + 36:24 + 48].round().astype(int)
    assert (labels[0][eyes[:, 1], eyes[:, 0]] == LABELS.index("features")).mean() > 0.5


def test_ground_truth_scores_the_ceiling_and_errors_lower_it():
    poses = world.motion("dance", 6, 5, SIZE)
    person, room = world.identity(5), world.background(5)
    truth = world.render(poses, person, room)
    best = world.score(truth, poses, person, room)
    assert best["pose"] == 1.0 and best["identity"] == 0.0 and best["background"] == 60.0
    assert best["flicker"] == pytest.approx(1.0)
    other = next(seed for seed in range(100) if world.identity(seed).shirt != person.shirt
                 and np.linalg.norm(np.subtract(world.identity(seed).skin_rgb, person.skin_rgb)) > 60)
    someone_else = world.score(world.render(poses, world.identity(other), room), poses, person, room)
    assert someone_else["identity"] > 40 and someone_else["pose"] < 0.7
    moved = world.score(world.render(world.motion("wave", 6, 6, SIZE), person, room), poses, person, room)
    assert moved["pose"] < 0.85 and moved["background"] < 30
    still = world.score(np.repeat(truth[:1], 6, axis=0), poses, person, room)
    assert still["flicker"] == 0.0


def test_attribute_edit_changes_only_the_shirt():
    person = world.identity(3)
    red = person.with_shirt("red")
    assert red.shirt_rgb == SHIRT_COLOURS["red"] and red.skin_rgb == person.skin_rgb
    assert red.trousers_rgb == person.trousers_rgb and red.hair_rgb == person.hair_rgb


def test_attribute_edit_row_samples_as_the_attribute_edit_workflow():
    api = json.loads((ROOT / "workflows" / "api" / "posecrafter_attribute_edit.json").read_text())
    (sampler,) = [node["inputs"] for node in api.values() if node["class_type"] == "PoseCrafterTemporalSampler"]
    assert sampler["cfg"] == ATTRIBUTE_EDIT_GUIDANCE
    assert api[sampler["negative"][0]]["inputs"]["text"] == ""  # the row's negative is the empty prompt


@pytest.mark.parametrize("call, names", [
    (lambda: world.motion("dance", 1, 0, SIZE), "frames"),
    (lambda: world.motion("dance", 8, 0, 100), "size"),
    (lambda: world.background(0, 60), "size"),
    (lambda: world.motion("moonwalk", 8, 0, SIZE), "motion kind 'moonwalk'"),
    (lambda: world.run_case(1, 1, "dance", "wave", ablation="magic"), "ablation 'magic'"),
    (lambda: world.run_case(1, 1, "dance", "salsa"), "motion kind 'salsa'"),
    (lambda: world.identity(0).with_shirt("teal"), "shirt colour 'teal'"),
    (lambda: world.score(np.zeros((2, SIZE, SIZE, 3), np.uint8), world.motion("walk", 3, 0, SIZE),
                         world.identity(0), world.background(0)), r"frames: expected uint8 \[3, 128, 128, 3\]"),
])
def test_impossible_settings_are_refused_by_name(call, names):
    with pytest.raises(ValueError, match=names):
        call()


def test_prompt_tokens_are_clips_bpe_ids():
    # ids from CLIP's BPE tokenizer (open_clip's SimpleTokenizer, the vocabulary ComfyUI's SD1 tokenizer uses)
    tokens = models.prompt_tokens("a person in a red shirt")
    assert tokens[:8] == [49406, 320, 2533, 530, 320, 736, 2523, 49407]
    assert len(tokens) == 77 and set(tokens[8:]) == {49407}
    assert models.prompt_tokens("")[:2] == [49406, 49407]
    with pytest.raises(ValueError, match="not one of the world's"):
        models.prompt_tokens("a cat")


def test_text_encoder_weights_are_the_seeded_numpy_stream():
    state = models.clip_state_dict()
    assert len(state) == 2 + 12 * 16 + 3
    token = state["text_model.embeddings.token_embedding.weight"]
    assert token.shape == (49408, 768) and token.dtype == torch.float32
    # the first draws of PCG64(20261206), times 0.02: a change of seed, order or generator changes them and the
    # trained world models would no longer match their text encoder
    expected = np.random.Generator(np.random.PCG64(models.TEXT_SEED)).standard_normal(3) * 0.02
    np.testing.assert_array_equal(token[0, :3].numpy(), expected.astype(np.float32))
    assert float(token.std()) == pytest.approx(0.02, rel=0.01)
    assert state["text_model.final_layer_norm.weight"].eq(1).all()


def test_learning_rate_is_a_python_float_after_warm_up():
    # a numpy scalar in the optimizer state makes every checkpoint unreadable with weights_only=True
    rates = [train.lr_at(step, 1000, 4e-4) for step in (0, 99, 100, 500, 999)]
    assert all(type(rate) is float for rate in rates)
    assert rates[2] == pytest.approx(4e-4) and rates[-1] == pytest.approx(4e-5, rel=1e-3)


def test_min_snr_weights_cap_only_the_easy_low_noise_steps():
    schedule = DDPMScheduler.from_pretrained(str(SCHEDULER_CONFIG))
    weights = train.min_snr_weights(schedule, torch.tensor([0, 100, 999]))
    assert weights[0] < 0.01 and 0 < weights[1] < 1 and weights[2] == 1  # SNR 5 falls near t=150 on SD1.5's schedule


def test_pool_smaller_than_a_batch_is_refused(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--pool", "8", "--batch", "16"])
    assert "--pool must hold at least one batch (--batch 16), got 8" in capsys.readouterr().err


def test_training_resumes_where_it_stopped_and_never_overwrites_weights(tmp_path, monkeypatch, capsys):
    embeddings = {text: torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(i))
                  for i, text in enumerate(models.PROMPTS)}
    monkeypatch.setattr(models, "prompt_embeddings", lambda: embeddings)  # CLIP-L itself is tested above
    small = ["--batch", "2", "--vae-batch", "2", "--vae-crop", "32", "--save-every", "1", "--vae-steps", "2",
             "--vae-detail-steps", "2", "--pool", "4"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    assert train.main(["--out", str(tmp_path / "a"), "--work", str(resumed), "--steps", "2", *small]) == 0
    assert train.main(["--out", str(tmp_path / "b"), "--work", str(resumed), "--steps", "3", *small]) == 0
    out = capsys.readouterr().out
    assert "vae: resuming at step 2 of 2" in out and "vae_detail: resuming at step 2 of 2" in out
    assert "diffusion: resuming at step 2 of 3" in out
    assert train.main(["--out", str(tmp_path / "c"), "--work", str(straight), "--steps", "3", *small]) == 0
    checkpoints = [list(work.glob("vae-*/diffusion.pt")) for work in (resumed, straight)]
    assert [len(found) for found in checkpoints] == [1, 1]  # one folder per VAE, named after its weights
    losses = [torch.load(found[0], weights_only=True)["losses"] for found in checkpoints]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)  # resuming changes nothing
    for name in models.WEIGHT_FILES:
        assert (tmp_path / "b" / name).stat().st_size > 0
    monkeypatch.setattr(models, "WEIGHTS", tmp_path / "b")
    assert train.main(["--work", str(resumed), *small]) == 2  # weights there, no --out: refused before training
    assert "already holds trained weights; pass --out" in capsys.readouterr().err


def test_detail_crops_centre_on_the_face_features_and_hands_and_weigh_their_pixels():
    images, weights = train.detail_batch(step=0, size=16, crop=32, seed=6)
    assert images.shape == (16, 3, 32, 32) and weights.shape == (16, 1, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    assert set(weights.unique().tolist()) == {1.0, 1 + train.DETAIL_WEIGHT}
    detailed = (weights > 1).flatten(1).any(dim=1)
    assert detailed.sum() >= 10  # three quarters aim at a feature or hand pixel; random crops rarely hold one
    _, again = train.detail_batch(step=0, size=16, crop=32, seed=6)
    assert torch.equal(weights, again)  # a resumed run draws the same crops


@pytest.mark.parametrize("folder, says", [("nowhere", "does not exist"), ("file", "is a file, not a folder"),
                                          (".", "has no models/ folder, so it is not a ComfyUI folder")])
def test_install_refuses_a_folder_that_is_not_comfyuis_by_name(tmp_path, capsys, folder, says):
    from benchmarks.world import install

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit:
        install.main([str(tmp_path / folder)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and f"COMFYUI_DIR {tmp_path / folder} {says}" in err and "Traceback" not in err


def test_install_never_overwrites_and_writes_nothing_when_it_refuses(tmp_path, capsys):
    from benchmarks.world import install

    mine = tmp_path / "input" / install.DRIVING_POSES
    (tmp_path / "models").mkdir()
    mine.parent.mkdir()
    mine.write_text("my poses")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit):
        install.main([str(tmp_path), "--weights", str(tmp_path / "no_weights")])
    assert f"already there and are not overwritten: {mine}; delete them, or pass --replace" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # replacing: the weights are read before anything is written
        install.main([str(tmp_path), "--weights", str(tmp_path / "no_weights"), "--replace"])
    assert "the world's weights are missing" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before and mine.read_text() == "my poses"


def test_installed_videos_and_pose_files_hold_the_cases_frames_and_poses(tmp_path):
    """What ComfyUI's Load Video decodes (rgb24 / 255) is exactly the rendered frames, at the motion's 12 fps;
    Load Poses reads back the renderer's poses."""
    import av

    from benchmarks.world import install
    from posecrafter.pose import from_pose_keypoint

    paths = {what: tmp_path / target.name for what, target in install.TARGETS.items() if target.parts[0] == "input"}
    install.write_inputs(paths)
    case, driving = install.world_case()
    for video, frames in ((paths["training_video"], case.training_frames), (paths["driving_video"], driving)):
        with av.open(str(video)) as container:
            decoded = [frame for frame in container.decode(video=0)]
            rate = container.streams.video[0].average_rate
        assert decoded[0].format.name == "rgb24" and rate == install.FPS
        np.testing.assert_array_equal(np.stack([frame.to_ndarray(format="rgb24") for frame in decoded]), frames)
    for file, poses in ((paths["training_poses"], case.training_poses), (paths["driving_poses"], case.driving(16))):
        loaded = from_pose_keypoint(json.loads(file.read_text()), file.name)
        assert (loaded.canvas_width, loaded.canvas_height) == (poses.canvas_width, poses.canvas_height) == (SIZE, SIZE)
        np.testing.assert_array_equal(loaded.visible, poses.visible)
        np.testing.assert_allclose(loaded.points[poses.visible], poses.points[poses.visible], atol=1e-9)


def test_outcome_means_keep_only_the_metrics_every_case_reported():
    from benchmarks.world.outcome import mean_scores
    table = mean_scores([{"full": {"pose": 0.4, "identity_torso": 9.0}}, {"full": {"pose": 0.6}}, {}])
    assert table == {"full": {"pose": pytest.approx(0.5), "cases": 2}}


def test_outcome_fresh_reruns_only_the_named_rows(tmp_path):
    """--fresh --ablations X runs X again and keeps the other rows saved for the same weights."""
    from benchmarks.world import outcome
    saved = {"pose": 0.5, "identity": 40.0, "background": 20.0, "seconds": 1.0}
    stale = dict(saved, pose=0.25)
    (tmp_path / "world_outcome_cases.json").write_text(json.dumps({
        "weights": outcome.weights_fingerprint(models.WEIGHTS),
        "cases": [{"case": list(outcome.CASES[0]), "scores": {"no_tuning": saved, "ground_truth": stale}}]}))
    assert outcome.main(["--cases", "1", "--ablations", "ground_truth", "--fresh", "--out", str(tmp_path)]) == 0
    (entry,) = json.loads((tmp_path / "world_outcome_cases.json").read_text())["cases"]
    assert entry["scores"]["no_tuning"] == saved
    assert entry["scores"]["ground_truth"]["pose"] == 1.0  # the render scored against itself, not the stale 0.25


def test_bf16_row_convolutions_are_torchs_bf16_convolutions():
    """The bf16 row's stand-in for the slow CPU bf16 convolution gives torch's own bf16 result (forward, under
    the model's bf16 autocast, and the input gradient), and leaves fp32 convolutions alone."""
    from benchmarks.world.cases import Bf16ConvolutionsInFp32
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 12, 12, generator=torch.Generator().manual_seed(0))
    native_x, mode_x = x.bfloat16().requires_grad_(), x.bfloat16().requires_grad_()
    bf16_conv = torch.nn.Conv2d(8, 16, 3, padding=1).bfloat16()
    bf16_conv.load_state_dict(conv.state_dict())
    native = bf16_conv(native_x)
    native.float().square().sum().backward()
    with Bf16ConvolutionsInFp32():
        replaced = bf16_conv(mode_x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = conv(x)
        fp32 = conv(x)
    replaced.float().square().sum().backward()
    assert replaced.dtype == autocast.dtype == torch.bfloat16
    scale = native.float().abs().max()
    assert (replaced.float() - native.float()).abs().max() <= 2 ** -7 * scale  # at most a bf16 rounding step
    assert (autocast.float() - native.float()).abs().max() <= 2 ** -7 * scale
    assert (mode_x.grad.float() - native_x.grad.float()).abs().max() <= 2 ** -6 * native_x.grad.float().abs().max()
    assert fp32.dtype == torch.float32 and torch.equal(fp32, conv(x))


def test_face_error_summary_bins_frames_by_feature_distance():
    from benchmarks.world.face_error import OTHER_SEEDS, summary
    frames = [{"person": "case 1", "distance_px": d, "base": b, "no_tuning": n}
              for d, b, n in ((1.0, 30.0, 30.0), (3.9, 10.0, float("nan")), (4.0, 20.0, 50.0), (20.0, 40.0, 90.0))]
    run = {"pose": 0.5, "identity": 30.0, "identity_face": 20.0, "background": 22.0, "flicker": 1.5}
    warps = {f"seed {seed} {row} {warp}": run for seed in OTHER_SEEDS for row in ("no_tuning", "full")
             for warp in ("bilinear", "nearest")}
    text = summary({"frames": frames, "edits": {"case 1": {"latent_std": 0.95, "pasted_std": 0.7,
                                                          "affine_residual_px": 0.2}}, "warps": warps})
    assert "0-4 px: no_tuning 30.0, base 20.0 (2 frames)" in text
    assert "4-12 px: no_tuning 50.0, base 20.0 (1 frames)" in text
    assert "12-inf px: no_tuning 90.0, base 40.0 (1 frames)" in text
    assert "case 1: 0.95, 0.70 (74%), 0.2 px" in text
