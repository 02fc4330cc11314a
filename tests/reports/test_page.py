"""The pages' shared parts: the shell, thumbnails."""

from tftransfer.reports.page import STYLE, thumbnail_uri, write_html


def test_a_page_is_one_self_contained_file_with_the_title_escaped(tmp_path):
    path = write_html(tmp_path / "p.html", "cats & <dogs>", ["<h1>x</h1>", "<p>y</p>"],
                      extra_style=".extra { color: red; }")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<title>cats &amp; &lt;dogs&gt;</title>" in text
    assert STYLE in text and ".extra { color: red; }" in text
    assert "<h1>x</h1>\n<p>y</p>" in text and text.endswith("</body></html>")


def test_a_thumbnail_of_a_photo_past_pils_own_limit_is_left_out_not_raised(tmp_path,
                                                                          monkeypatch):
    from PIL import Image


    Image.new("RGB", (100, 100), "red").save(tmp_path / "big.jpg")
    assert thumbnail_uri(file=tmp_path / "big.jpg").startswith("data:image/jpeg")
    # Below our pixel limit but past twice PIL's: its DecompressionBombError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert thumbnail_uri(file=tmp_path / "big.jpg") is None
    (tmp_path / "tiff.jpg").write_bytes(b"II*\0" + b"\0" * 100)
    assert thumbnail_uri(file=tmp_path / "tiff.jpg") is None
