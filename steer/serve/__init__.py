"""`steer serve`: steered generation behind an OpenAI-compatible HTTP API.

service.py   SteeringService: requests checked into jobs, run one at a time on a model thread
api.py       the FastAPI app: /v1/models, /v1/chat/completions, /v1/completions (SSE streams)
steering.py  a request's steering expression -> levers (steer.steering.expr), and back
"""

from .service import Job, Piece, SteeringService, StopScanner

__all__ = ["Job", "Piece", "SteeringService", "StopScanner"]
