"""`fovea serve`: an inference server for models of any task, the line's live view and control, a
dashboard, and batch inference on Ray (`fovea.serve.batch`). Outermost layer: nothing imports it.

`create_app(models, config)` (fovea.serve.app) builds the FastAPI app; `fovea.serve.server` runs
it under uvicorn so that endless streams never block shutdown.
"""
