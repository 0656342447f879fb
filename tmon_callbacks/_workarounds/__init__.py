"""Every place tmon reaches past a framework's public API (a private attribute, a monkeypatch, a
caller's frame), one module per framework: ``python`` (the interpreter itself), ``lightning``,
``hf``, ``keras``, ``torch``. Each use says why it is needed; ``tests/callbacks/test_workarounds_<fw>.py``
fails loudly when the framework changes what it relies on. Nothing else in tmon touches these internals."""
