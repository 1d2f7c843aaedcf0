"""Target profiles: the contract by default, clear errors naming the key."""

import pytest

from harness import ProfileError, load_profile
from conftest import ROOT


def test_default_profile_is_the_contract():
    profile = load_profile()
    assert profile.url("events", id="abc") == "http://127.0.0.1:8080/api/jobs/abc/events"
    assert profile.terminal_events == {"job-completed", "job-failed", "job-cancelled"}
    assert profile.ranges["visuals"] == (35.0, 65.0)


def test_example_profile_loads():
    profile = load_profile(ROOT / "examples" / "other-names.toml")
    assert profile.paths["events"] != "/api/jobs/{id}/events"
    assert profile.auth_header == ("Authorization", "Bearer example")


@pytest.mark.parametrize("text,named", [
    ("[paths]\nevent = '/x/{id}'\n", "[paths].event"),
    ("[nonsense]\na = 1\n", "[nonsense]"),
    ("[paths]\nevents = '/no-id'\n", "[paths].events"),
    ("[paths]\nevents = 'relative/{id}'\n", "[paths].events"),
    ("[timing]\ntolerance_fraction = -1\n", "[timing].tolerance_fraction"),
    ("[timing]\nkeepalive_seconds = 'ten'\n", "[timing].keepalive_seconds"),
    ("[stages]\norder = ['a', 'b']\n", "[stages].ranges"),
    ("[job]\nknobs = 'yes'\n", "[job].knobs"),
    ("[target]\nbase_url = 'ftp://x'\n", "[target].base_url"),
    ("[target]\nauth_header = 'no colon'\n", "[target].auth_header"),
    ("[events]\nstatus = ''\n", "[events].status"),
    ("not toml = = =", "not valid TOML"),
])
def test_bad_profiles_name_the_key(tmp_path, text, named):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert named in str(info.value)


def test_missing_file_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "nope.toml")

