import cv2
import numpy as np
import pytest

from edge_agent.agent.capture import Frame
from edge_agent.agent.config import parse_config
from edge_agent.agent.emotions import EmotionClassifier
from edge_agent.agent.faces import FaceDetector
from edge_agent.agent.pipeline import FramePipeline
from edge_agent.common.contract import EMOTIONS
from edge_agent.tools.bench_pipeline import matched
from support import CASCADE, DATA, MODEL


def gray(name):
    """Gray as the pipeline makes it (JPEG decoders' own gray differs in the last bit)."""
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2GRAY)


def test_seed_defaults_find_the_one_face_in_justin():
    boxes = FaceDetector(CASCADE).detect(gray("justin.jpg"))
    assert boxes.shape == (1, 4) and boxes[0, 2] > 100


def test_no_faces_image_gives_no_boxes():
    assert FaceDetector(CASCADE).detect(gray("no-faces.jpg")).shape == (0, 4)


def test_detect_width_finds_the_same_faces_in_frame_pixels():
    image = gray("solvay_conference.jpg")
    full = FaceDetector(CASCADE).detect(image)
    shrunk = FaceDetector(CASCADE, detect_width=640).detect(image)
    assert len(full) == 6
    assert matched(shrunk, full) == len(full)
    # Boxes come back in the frame's own pixels, not the shrunk image's.
    assert shrunk[:, 2].min() > 90


def test_min_size_is_in_frame_pixels_whatever_the_detect_width():
    image = gray("solvay_conference.jpg")
    for detector in (FaceDetector(CASCADE, min_size=125), FaceDetector(CASCADE, min_size=125, detect_width=500)):
        boxes = detector.detect(image)
        assert 0 < len(boxes) < 6
        assert boxes[:, 2].min() >= 120


def test_frames_narrower_than_detect_width_are_not_enlarged():
    detector = FaceDetector(CASCADE, detect_width=1024)
    assert detector.scale_for(640) == 1.0 and detector.scale_for(2048) == 0.5
    assert FaceDetector(CASCADE, detect_width=0).scale_for(4000) == 1.0


def test_equalize_helps_a_dark_frame():
    dark = (gray("justin.jpg") // 6).astype(np.uint8)
    assert len(FaceDetector(CASCADE, equalize=True).detect(dark)) == 1


def test_crop_offsets_widen_the_crop_and_stop_at_the_frame_edge():
    image = np.zeros((100, 200), np.uint8)
    detector = FaceDetector(CASCADE, crop_offsets=(0.25, 0.5))
    inner, edge = detector.crops(image, np.array([[50, 30, 40, 20], [0, 0, 40, 40]]))
    assert inner.shape == (40, 60)
    assert edge.shape == (60, 50)
    assert FaceDetector(CASCADE).crops(image, np.array([[50, 30, 40, 20]]))[0].shape == (20, 40)


def test_missing_or_broken_cascade_is_a_clear_error(tmp_path):
    from edge_agent.common.errors import EdgeAgentError

    with pytest.raises(EdgeAgentError, match="does not exist"):
        FaceDetector(tmp_path / "none.xml")
    (tmp_path / "bad.xml").write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(EdgeAgentError, match="not an OpenCV cascade"):
        FaceDetector(tmp_path / "bad.xml")


@pytest.fixture(scope="module")
def pipeline():
    return FramePipeline(FaceDetector(CASCADE), EmotionClassifier(MODEL))


def test_pipeline_labels_every_face_of_a_frame(pipeline):
    image = cv2.imread(str(DATA / "solvay_conference.jpg"))
    result = pipeline.process(Frame(image, 1000.0, 3))
    assert (result.t, result.index) == (1000.0, 3)
    assert len(result.faces) == 6
    assert all(face.label in EMOTIONS and 0 < face.p <= 1 for face in result.faces)
    assert result.detect_s > 0 and result.classify_s > 0


def test_pipeline_labels_faces_in_one_batched_call(pipeline):
    image = cv2.imread(str(DATA / "solvay_conference.jpg"))
    before = pipeline.classifier.invoke_seconds
    calls = []
    original = pipeline.classifier.probabilities
    pipeline.classifier.probabilities = lambda crops: calls.append(len(crops)) or original(crops)
    try:
        pipeline.process(Frame(image, 0.0, 0))
    finally:
        del pipeline.classifier.probabilities
    assert calls == [6]
    assert pipeline.classifier.invoke_seconds > before


def test_pipeline_on_a_frame_without_faces(pipeline):
    image = cv2.imread(str(DATA / "no-faces.jpg"))
    result = pipeline.process(Frame(image, 0.0, 0))
    assert result.faces == () and result.classify_s < 0.001


def test_pipeline_takes_gray_frames_too(pipeline):
    result = pipeline.process(Frame(gray("justin.jpg"), 0.0, 0))
    assert len(result.faces) == 1


def test_pipeline_from_config_applies_detector_settings():
    config = parse_config("detector:\n  detect_width: 320\n  min_neighbors: 8\n  threads: 1\n")
    pipeline = FramePipeline.from_config(config)
    assert pipeline.detector.detect_width == 320 and pipeline.detector.min_neighbors == 8
    assert cv2.getNumThreads() == 1
    assert pipeline.classifier.tag.startswith("fer-gap9-fear-int8:")


def test_defaults_find_every_face_of_a_crowded_720p_frame_whole_and_then_in_learned_bands(tmp_path):
    from edge_agent.tools.bench_pipeline import classroom_frame

    frame, true_faces = classroom_frame(DATA / "solvay_conference.jpg")
    assert frame.shape == (720, 1280, 3) and len(true_faces) == 40
    config = parse_config(f"detector:\n  search:\n    learn_frames: 2\n    state: {tmp_path / 'search.json'}\n")
    pipeline = FramePipeline.from_config(config)
    gray_frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    for _ in range(3):
        boxes = pipeline.finder.detect(gray_frame)
        assert matched(boxes, true_faces) == 40
        # Bands ask one neighbour fewer than a whole frame: a stray box or two more, never a face less.
        assert len(boxes) <= 44
    assert pipeline.finder.full_searches == 2 and pipeline.finder.plan.bands
