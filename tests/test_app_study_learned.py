"""Study page: the comparison of the demo masker with the untrained head (docs/masker_picks.json's
"comparison", scripts/masker_picks.py) is shown below the control's sentence, escaped; absent, nothing."""

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
    assert "Learned, or a random read-out?" in t and data["comparison"]["sentence"] in t
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
