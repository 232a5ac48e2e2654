"""A Flask app with gunicorn in its requirements and no Procfile."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "flask under gunicorn\n"
