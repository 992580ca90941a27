"""Links that reopen a view (app/links.py): a page's main choices in the URL's query parameters.

Each page is opened through AppTest with query parameters, as a shared link opens it: the
view it shows, a note (and the default) for a value it cannot use, and the URL it writes
back when a widget changes. The visitor's ``?visitor=`` token must survive all of it.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from test_pages import ROOT, isolated  # noqa: F401 - the fixture isolates each test's runs and caches

from resnet_viz.app.state import Keys
from resnet_viz.config import DataConfig, ModelConfig


def opened(name: str, **params: str) -> AppTest:
    """Page ``name`` opened from a link with ``params``."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[Keys.DATA_CONFIG] = DataConfig(source="synthetic", synthetic_train=640, synthetic_test=160)
    at.query_params.update(params)
    at.switch_page(f"app_pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def notes(at: AppTest) -> list[str]:
    return [i.value.replace("\\", "") for i in at.info if "was not used" in i.value]


def widget(at: AppTest, kind: str, label: str):
    return next(w for w in getattr(at, kind) if w.label == label)


def test_a_build_link_opens_that_network_and_keeps_the_visitor_token() -> None:
    at = opened("build", depth="56", shortcut="none")
    assert [m.value for m in at.metric][:2] == ["56", "853,018"]
    assert at.session_state[Keys.BUILD_CONFIG] == ModelConfig(depth=56, shortcut="none")  # what Train will train
    assert widget(at, "radio", "Shortcut").value == "none" and not notes(at)
    token = at.query_params["visitor"]
    assert token and at.query_params["depth"] == "56"
    widget(at, "slider", "Blocks per stage (n)").set_value(5).run()  # the user's change wins over the URL's 56
    assert [m.value for m in at.metric][0] == "32"
    assert at.query_params["depth"] == "32" and at.query_params["shortcut"] == "none"
    assert at.query_params["visitor"] == token
    widget(at, "radio", "Shortcut").set_value("A").run()  # back to the default: left out of the link
    assert "shortcut" not in at.query_params and at.query_params["visitor"] == token


def test_a_build_link_with_every_field() -> None:
    at = opened("build", depth="29", block="bottleneck", width="2", zero_init="true", shortcut="B")
    assert at.session_state[Keys.BUILD_CONFIG] == ModelConfig(depth=29, block="bottleneck", width=2, shortcut="B",
                                                              zero_init_residual=True)
    assert not notes(at)


@pytest.mark.parametrize(("params", "why"), [
    ({"depth": "abc"}, "depth=abc was not used (not a whole number)"),
    ({"depth": "21"}, "depth=21 was not used (depth 21 is not 6n+2"),
    ({"depth": "998"}, "depth=998 was not used (this page builds up to 36 blocks per stage)"),
    ({"shortcut": "Z"}, "shortcut=Z was not used (unknown shortcut 'Z'; choose one of none, A, B, C)"),
    ({"block": "nonexistent"}, "block=nonexistent was not used (unknown block type"),
    ({"width": "3"}, "width=3 was not used (the width multiplier here is one of 1, 2, 4)"),
    ({"zero_init": "maybe"}, "zero_init=maybe was not used (not true or false)"),
    ({"family": "vgg"}, "family=vgg was not used (not one of cifar, imagenet)"),
])
def test_a_bad_build_parameter_gives_the_default_and_a_note(params: dict[str, str], why: str) -> None:
    at = opened("build", **params)
    assert at.session_state.get(Keys.BUILD_CONFIG) in (None, ModelConfig())
    assert [m.value for m in at.metric][:2] == ["20", "269,722"]
    assert any(why in n for n in notes(at)), notes(at)
    assert not set(params) & set(at.query_params)  # the default is left out of the link
    at.run()  # the note is said once, not on every rerun
    assert not notes(at)


def test_a_bad_value_beside_good_ones_spoils_only_itself() -> None:
    at = opened("build", depth="56", shortcut="Z")
    assert at.session_state[Keys.BUILD_CONFIG] == ModelConfig(depth=56)
    assert len(notes(at)) == 1


def test_the_imagenet_family_and_network_are_in_the_link() -> None:
    at = opened("build", family="imagenet", net="resnet18")
    assert at.title[0].value == "Build an ImageNet ResNet"
    assert [m.value for m in at.metric][:2] == ["18", "11.7M"]
    at.segmented_control(key="build_imagenet_net").set_value("resnet34").run()
    assert at.query_params["net"] == "resnet34" and at.query_params["family"] == "imagenet"


def test_an_explain_link_opens_models_method_block_and_test_image() -> None:
    at = opened("explain", model="plain20", vs="untrained", method="gradcam", block="stage2.block1",
                **{"class": "ring", "index": "3"})
    assert not notes(at)
    assert widget(at, "selectbox", "Model").value.label.startswith("plain-20")
    assert widget(at, "selectbox", "Side by side with").value.kind == "untrained"
    assert widget(at, "selectbox", "Method").value == "gradcam"
    assert widget(at, "selectbox", "Grad-CAM at block").value == "stage2.block1"
    assert widget(at, "selectbox", "Class").value == 3  # ring: the fourth class of the synthetic set
    assert widget(at, "number_input", "Index (0-15)").value == 3
    assert any(m.value.replace("\\", "").startswith("**ring #3") for m in at.markdown)
    widget(at, "selectbox", "Method").set_value("occlusion").run()
    assert at.query_params["method"] == "occlusion" and at.query_params["model"] == "plain20"


@pytest.mark.parametrize(("params", "why"), [
    ({"model": "../../etc/passwd"}, "model=../../etc/passwd was not used (not one of resnet20, plain20, untrained)"),
    ({"vs": "/etc/passwd"}, "vs=/etc/passwd was not used"),
    ({"method": "x"}, "method=x was not used (not one of saliency"),
    ({"method": "gradcam", "block": "nonexistent"}, "block=nonexistent was not used (not one of stage1.block0"),
    ({"class": "zebra"}, "class=zebra was not used (not one of disc, square"),
    ({"index": "-1"}, "index=-1 was not used (outside 0 to 15)"),
    ({"index": "x" * 500}, "index=" + "x" * 60 + "... was not used (not a whole number)"),
])
def test_a_bad_explain_parameter_gives_the_default_and_a_note(params: dict[str, str], why: str) -> None:
    at = opened("explain", **params)
    assert any(why in n for n in notes(at)), notes(at)
    assert widget(at, "selectbox", "Model").value.label.startswith("ResNet(A)-20")


def test_an_inspect_link_opens_its_model_block_and_image() -> None:
    at = opened("inspect", model="plain20", block="stage3.block0", index="5")
    assert not notes(at)
    assert widget(at, "selectbox", "Model").value.label.startswith("plain-20")
    assert widget(at, "select_slider", "Block").value == "stage3.block0"
    assert widget(at, "number_input", "Index (0-15)").value == 5
    widget(at, "select_slider", "Block").set_value("stem").run()
    assert at.query_params["block"] == "stem"
    at = opened("inspect", block="layer9")
    assert any("block=layer9 was not used" in n for n in notes(at)), notes(at)


def test_an_experiments_link_opens_its_tab() -> None:
    at = opened("experiments", tab="signal-at-init", model="plain20")
    assert at.session_state["exp_tab"] == "Signal at init" and not notes(at)
    assert at.query_params["tab"] == "signal-at-init"
    at = opened("experiments", tab="nonexistent")
    assert at.session_state["exp_tab"] == "Lesion"
    assert any("tab=nonexistent was not used (not one of lesion, loss-landscape" in n for n in notes(at))
    assert "tab" not in at.query_params


def test_an_imagenet_link_opens_its_network_and_method() -> None:
    at = opened("imagenet", net="resnet34", method="gradcam")
    assert widget(at, "radio", "Network").value == "resnet34"
    assert widget(at, "selectbox", "Method").value == "gradcam"
    at = opened("imagenet", net="resnet1000")
    assert widget(at, "radio", "Network").value == "resnet18" and notes(at)


def test_a_compare_link_with_unknown_runs_is_a_note() -> None:
    from test_pages import _hostile_run

    run_id = _hostile_run("a run")
    at = opened("compare", runs=f"{run_id},nosuchrun", x="epochs")
    assert any("runs=" in n and "no such item here: nosuchrun" in n for n in notes(at)), notes(at)
    assert widget(at, "multiselect", "Runs").value == [run_id]  # the default selection
    assert widget(at, "radio", "x-axis").value == "epochs"
    at = opened("compare", runs=run_id, show="loss")
    assert widget(at, "multiselect", "Runs").value == [run_id] and widget(at, "radio", "Show").value == "loss"
