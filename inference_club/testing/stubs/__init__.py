"""Protocol-faithful stubs of native engine servers (ComfyUI, AUTOMATIC1111, ACE-Step,
whisper.cpp, Dia, Hunyuan3D-2, TRELLIS) for tests: real paths, shapes and status codes,
async submit/poll, progress and interrupt, checked against the engines' published
examples in ``tests/fixtures/engines/``."""
