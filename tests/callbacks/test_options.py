"""The options every adapter takes: one definition, its checks, its signature and its documentation."""

import dataclasses
import inspect

import pytest

from tmon_callbacks._options import CallbackOptions, make_options, options_doc, options_signature


def test_every_option_is_documented_in_one_place():
    doc = options_doc()
    lines = doc.splitlines()
    assert lines[0] == "Args:"
    for f in dataclasses.fields(CallbackOptions):
        assert f.metadata["doc"], f.name
        assert f"\n        {f.name}: " in doc, f.name
    assert all(len(line) <= 100 for line in lines)
    assert all(line.startswith("        ") for line in lines[1:])
    # the words are all there, in order, whatever the wrapping
    assert " ".join(doc.split()).count("``off`` | ``view`` | ``manage``") == 1


def test_options_doc_takes_a_framework_specific_text_and_an_indent():
    doc = options_doc(indent=0, run_name="default ``hf-<date>-<time>``.")
    assert "\n    run_name: default ``hf-<date>-<time>``.\n" in doc
    with pytest.raises(TypeError, match="unknown option"):
        options_doc(run_nam="x")


def test_options_doc_drops_into_an_f_string_docstring():
    class Callback:
        __doc__ = f"""Record a fit.

        {options_doc(indent=8)}

        One instance can serve several fits.
        """

    cleaned = inspect.getdoc(Callback)
    assert "\nArgs:\n    store: database URL" in cleaned


def test_make_options_names_an_unknown_option_and_checks_values():
    with pytest.raises(
        TypeError, match="unknown option.*'sample_intervall'.*its options are: store, alerts, capture_logs"
    ):
        make_options(None, {"sample_intervall": 1})
    with pytest.raises(ValueError, match="flush_interval"):
        make_options(None, {"flush_interval": 0})
    opts = make_options("sqlite:///x.db", {"run_name": "a", "tags": ["t"]})
    assert (opts.store, opts.run_name, opts.tags, opts.report) == ("sqlite:///x.db", "a", ["t"], "auto")


def test_options_signature_lists_every_option_with_its_default():
    class Callback:
        def __init__(self, store=None, **options):
            pass

    options_signature(Callback)
    sig = inspect.signature(Callback.__init__)
    names = list(sig.parameters)
    assert names[:2] == ["self", "store"]
    assert names[2:] == [f.name for f in dataclasses.fields(CallbackOptions)][1:]
    assert sig.parameters["flush_interval"].default == 1.0 and sig.parameters["control"].default == "manage"
