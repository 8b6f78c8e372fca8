"""Home (AppTest): the app framed in three lines above the first page, the headline computed from the
models at hand, every term of the app defined in a glossary."""

import json

from app_helpers import ROOT, page
from streamlit.testing.v1 import AppTest

from smu_explain import verdict as V

TERMS = ("**bar**", "**position**", "**pitch**", "**duration**", "recovery accuracy", "**masker**",
         "**picked**", "**frozen**", "**no-model rule**", "**IQR**", "no clear difference", "**random masks**")


def _frame(path):
    import runpy

    runpy.run_path(path, init_globals={"FRAME": True})


def lines(at):
    return [m.value for m in at.markdown]


def test_the_about_page_frames_the_app_and_defines_every_term():
    at = AppTest.from_file(page("home.py"), default_timeout=30).run()
    assert not at.exception, at.exception
    md = lines(at)
    assert [m.split("**: ")[0] for m in md[:3]] == ["**What it shows", "**Why it matters", "**Headline"]
    [exp] = at.expander
    assert exp.label == "Words used in this app" and exp.proto.expanded
    glossary = "\n".join(md)
    for term in TERMS:
        assert term in glossary, term
    assert any(m.startswith("**Where to go**") for m in md)


def test_where_to_go_names_every_page():
    """Every page of the router (app.py) but the About page itself is named in "Where to go"."""
    import re

    titles = re.findall(r'st\.Page\([^)]*title="([^"]+)"', (ROOT / "app.py").read_text())
    assert "Score" in titles and "Explore" in titles
    at = AppTest.from_file(page("home.py"), default_timeout=30).run()
    [where] = [m for m in lines(at) if m.startswith("**Where to go**")]
    for title in titles:
        if title != "About":
            assert f"**{title}**" in where, title


def test_the_headline_is_computed_from_the_study_and_the_demo_models(tmp_path, monkeypatch):
    study = V.study_facts(V.load_study())
    at = AppTest.from_file(page("home.py"), default_timeout=30).run()
    headline = lines(at)[2]
    if study:  # the checkout's docs/study/results.json
        assert f"({100 * study['mean_diff']:+.1f} points of test accuracy" in headline
    demo = [ROOT / "models" / "demo-adversarial", ROOT / "models" / "demo-random"]
    curves = {d.name: V.last_recovery(d) for d in demo}
    if all(curves.values()):
        a, b = curves.values()
        assert f"demo-adversarial guessing back {sum(a.values()) / len(a):.1%}" in headline
        # one run each on its own held-out notes: no unpaired difference, no winner (audit F2)
        assert "points more" not in headline and "no interval" in headline
    # another study result: another headline (nothing written by hand)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"paired": {"overall": {"mean_diff": 0.031, "t_p": 0.01, "n": 8,
                                                          "significant": True}, "pretrain_seeds": 3},
                                   "model": {"n_params": 5_000_000}, "tasks": ["melody"]}))
    monkeypatch.setenv("SMU_STUDY_RESULTS", str(results))
    at = AppTest.from_file(page("home.py"), default_timeout=30).run()
    assert "5.0 M-parameter encoders, 3 seeds per strategy, 1 tasks), letting a masker choose the notes did " \
           "measurably help after fine-tuning (+3.1 points" in lines(at)[2]


def test_the_frame_above_the_first_page_is_three_lines_and_a_folded_glossary():
    at = AppTest.from_function(_frame, args=(page("home.py"),), default_timeout=30).run()
    assert not at.exception, at.exception
    md = lines(at)
    assert md[0].startswith("**What it shows**") and md[2].startswith("**Headline**")
    [exp] = at.expander
    assert not exp.proto.expanded
    assert not any(m.startswith("**Where to go**") for m in md)


def test_the_router_frames_the_first_page_only(tmp_path, monkeypatch):
    """app.py: "/" opens on Explore under the frame; another page (Study) without it."""
    from smu_explain import appwarmup as M

    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(M, "start_warm_up", lambda: None)  # no background model loading in a test
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    md = lines(at)
    assert md[0].startswith("**What it shows**") and md[2].startswith("**Headline**")
    assert [t.value for t in at.title] == ["Explore a piece"]
    at.switch_page("app_pages/study.py").run()
    assert not at.exception, at.exception
    assert not any(m.startswith("**What it shows**") for m in lines(at))


def test_why_it_matters_does_not_claim_the_demo_view_checks_the_claim():
    """The claim is about fine-tuned accuracy: the per-note view of two demo models cannot check it,
    and the first screen says so (audit F15)."""
    at = AppTest.from_file(page("home.py"), default_timeout=30).run()
    why = lines(at)[1]
    assert "check the claim" not in why
    assert "fine-tuning" in why and "says little about the claim" in why and "Study page tests the claim" in why


def test_the_about_page_says_what_the_demo_masker_learned_from_the_confirmation(tmp_path):
    """"What the masker learned, tested": the confirmed classes of docs/masker_picks_confirm.json (computed, with
    their direction), only when it re-tests docs/masker_picks.json's result; nothing when it does not match,
    is missing or broken; not in the frame above the first page."""
    from smu_explain.picks_null import confirmed_sentence

    at = AppTest.from_file(page("home.py"), default_timeout=30).run()
    confirm = json.loads((ROOT / "docs" / "masker_picks_confirm.json").read_text())
    [learned] = [m for m in lines(at) if m.startswith("**What the masker learned, tested**")]
    done = [h for h in confirm["hypotheses"] if h["confirmed"]]
    assert f"{len(done)} of {len(confirm['hypotheses'])} pre-registered candidates" in learned
    for h in done:
        assert f"{h['phrase']} {'higher' if h['direction'] == 'above' else 'lower'}" in learned.replace("\\", "")
    at = AppTest.from_function(_frame, args=(page("home.py"),), default_timeout=30).run()
    assert not any("What the masker learned" in m for m in lines(at))
    # a copy of the page beside other docs: a confirmation of other pieces, none, a broken file
    (tmp_path / "pages").mkdir()
    script = tmp_path / "pages" / "home.py"
    script.write_text((ROOT / "app_pages" / "home.py").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "masker_picks.json").write_text((ROOT / "docs" / "masker_picks.json").read_text())
    for text in (json.dumps({**confirm, "exploratory": {**confirm["exploratory"], "pieces": ["x"]}}), None, "{x"):
        target = tmp_path / "docs" / "masker_picks_confirm.json"
        target.unlink(missing_ok=True)
        if text is not None:
            target.write_text(text)
        at = AppTest.from_file(str(script), default_timeout=30).run()
        assert not at.exception, at.exception
        assert not any("What the masker learned" in m for m in lines(at))
    none = {**confirm, "hypotheses": [{**h, "confirmed": False} for h in confirm["hypotheses"]]}
    assert confirmed_sentence(none).startswith(f"None of the {len(confirm['hypotheses'])} candidate")
    assert confirmed_sentence({"hypotheses": [{"confirmed": True}]}) is None
