# The user's guide's Flask receiver, as written there (only the route path comes from env).
# pip install flask standardwebhooks
import os

from flask import Flask, jsonify, request

# Standard verification wrapper for Standard Webhook Headers
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

app = Flask(__name__)
SIGNING_SECRET = os.environ.get("WEBHOOK_SIGNING_SECRET")


@app.route("/gemini-callback", methods=["POST"])
def gemini_callback():  # type: ignore[no-untyped-def]
    payload = request.get_data(as_text=True)
    headers = request.headers
    try:
        wh = Webhook(SIGNING_SECRET)  # type: ignore[arg-type]
        event = wh.verify(payload, headers)  # type: ignore[arg-type]
    except WebhookVerificationError:
        return jsonify({"error": "Signature invalid"}), 400
    # Process thin payload contents
    if event.get("type") in ("batch.completed", "video.generated"):
        uri = event["data"]["output_file_uri"]
        print(f"Batch finished! Results at: {uri}")
    return jsonify({"status": "received"}), 200
