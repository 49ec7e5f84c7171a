"""Testing helpers: a pytest plugin with disposable engines and containers."""
