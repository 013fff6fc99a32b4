"""The server a user would write in ten lines: FastAPI + a transformers `pipeline` per request, no batching.

    python benchmarks/naive_server.py MODEL_DIR --port 8001

The baseline of `serve_load.py`. Same request and answer shape as `python -m modules.serve` (`{"inputs": [...]}`).
"""

import argparse

import uvicorn
from fastapi import FastAPI
from transformers import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8001)
    options = parser.parse_args()
    app = FastAPI()
    classifier = pipeline("text-classification", model=options.model)

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/predict")
    def predict(body: dict) -> dict:
        return {"predictions": classifier(body["inputs"])}

    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
