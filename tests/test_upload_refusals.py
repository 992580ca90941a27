"""Refused uploads are said in words on the page (issue 12, "the red chip explained").

Streamlit's uploader refuses a file of a type it was not given, or over its size limit, in
the browser: a red chip with a tooltip, and Python never hears of the file. So the uploader
takes every type (the content check refuses the rest, with a message per file), and the
caption beside it states the types and the size limit, the one refusal left to the browser.
"""

from __future__ import annotations

from test_pages import _png_bytes, isolated, page  # noqa: F401 - the fixture isolates each test

from resnet_viz.data.uploads import MAX_UPLOAD_BYTES


def _explain_upload():
    at = page("explain").run()
    next(r for r in at.radio if r.label == "Input").set_value("Upload").run()
    return at


def test_a_text_file_and_a_corrupt_png_are_refused_in_words() -> None:
    at = _explain_upload()
    at.file_uploader[0].set_value([("notes.txt", b"a teacher's notes, not a picture\n", "text/plain"),
                                   ("broken.png", _png_bytes()[:50], "image/png"),
                                   ("good.png", _png_bytes(), "image/png")]).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("notes.txt: the file is not a PNG, JPEG, WebP, GIF or BMP image") for e in errors), errors
    assert any(e.startswith("broken.png: ") and "truncated or damaged" in e for e in errors), errors
    assert at.get("plotly_chart"), "the good image beside them was not explained"


def test_the_uploader_states_its_types_and_size_limit_in_words() -> None:
    import streamlit as st

    at = _explain_upload()
    uploader = at.file_uploader[0]
    limit = min(st.get_option("server.maxUploadSize"), MAX_UPLOAD_BYTES // 2**20)
    assert list(uploader.proto.type) == []  # no type is refused in the browser, where only a red chip says so
    assert uploader.proto.max_upload_size_mb == limit  # the browser refuses what the decoder would
    words = " ".join(c.value for c in at.caption)
    assert f"PNG, JPEG, WebP, BMP or GIF images, up to {limit} MB each" in words
    assert f"A file over {limit} MB never reaches this page: your browser marks it red" in words
    assert any(i.value == "Pick a model and one or more images." for i in at.info)  # the words are beside it
