"""Study page: whether the demo masker's preferences are learned (docs/masker_picks.json's "null": many
random heads on its own encoder; from before it, "comparison" with the one untrained head;
scripts/masker_picks.py) is shown below the control's sentence, escaped; absent, nothing."""

import json

from app_helpers import ROOT, texts
from streamlit.testing.v1 import AppTest
from test_app_study import copy_page


def test_study_page_says_whether_the_masker_learned_its_preferences(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    data = json.loads((ROOT / "docs" / "masker_picks.json").read_text())
    (docs / "masker_picks.json").write_text(json.dumps(data))
    script = copy_page(tmp_path)
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception, at.exception
    t = texts(at).replace("\\", "")
    # the verdict the doc stands by: the random heads of the model's own encoder, not the one control head
    assert "Learned, or a random read-out?" in t and data["null"]["sentence"] in t
    assert data["comparison"]["sentence"] not in t
    null = data.pop("null")  # a file from before the random heads: the comparison with the control
    (docs / "masker_picks.json").write_text(json.dumps(data))
    at = AppTest.from_file(script, default_timeout=60).run()
    assert data["comparison"]["sentence"] in texts(at).replace("\\", "")
    assert null["sentence"] not in texts(at).replace("\\", "")
    data["comparison"]["sentence"] = "Evil <b>bold</b> *x*"
    (docs / "masker_picks.json").write_text(json.dumps(data))
    at = AppTest.from_file(script, default_timeout=60).run()
    md = next(m.value for m in at.markdown if "Evil" in m.value)
    assert "\\<b\\>" in md and "\\*x\\*" in md
    del data["comparison"]  # a file from before the comparison: the rest as before, no heading
    (docs / "masker_picks.json").write_text(json.dumps(data))
    at = AppTest.from_file(script, default_timeout=60).run()
    assert not at.exception and "Learned, or a random read-out?" not in texts(at)
    assert data["control"]["sentence"] in texts(at).replace("\\", "")
