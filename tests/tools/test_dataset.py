import numpy as np
import pytest

from edge_agent.common.errors import EdgeAgentError
from edge_agent.tools.dataset import load_faces


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_reads_images_and_labels(tmp_path):
    images = np.zeros((3, 48, 48), np.uint8)
    loaded, labels = load_faces(write(tmp_path / "ok.npz", images=images, labels=np.array([0, 3, 6], np.uint8)))
    assert loaded.shape == (3, 48, 48) and labels.tolist() == [0, 3, 6]


def test_missing_file(tmp_path):
    with pytest.raises(EdgeAgentError, match=r"nowhere\.npz does not exist"):
        load_faces(tmp_path / "nowhere.npz")


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("images,labels\n")
    with pytest.raises(EdgeAgentError, match=r"text\.npz is not a readable npz"):
        load_faces(path)


def test_missing_arrays_are_named(tmp_path):
    path = write(tmp_path / "x.npz", pixels=np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(EdgeAgentError, match=r"has no 'images' or 'labels' array \(it has: pixels\)"):
        load_faces(path)


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((2, 48, 48), np.float32), np.array([0, 1]), "expected uint8"),
    (np.zeros((2, 48), np.uint8), np.array([0, 1]), "expected uint8"),
    (np.zeros((2, 48, 48), np.uint8), np.array([0]), "one label per image"),
    (np.zeros((2, 48, 48), np.uint8), np.array([0, 7]), "integers 0..6"),
    (np.zeros((0, 48, 48), np.uint8), np.array([], np.uint8), "holds no faces"),
])
def test_malformed_contents(tmp_path, images, labels, message):
    with pytest.raises(EdgeAgentError, match=message):
        load_faces(write(tmp_path / "bad.npz", images=images, labels=labels))
