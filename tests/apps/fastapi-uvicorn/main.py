"""A FastAPI app with uvicorn in its pyproject.toml dependencies and no Procfile."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def index():
    return {"app": "fastapi under uvicorn"}


@app.get("/items/{item_id}")
def item(item_id: int):
    return {"item": item_id}
