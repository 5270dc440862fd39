// The user's guide's Express receiver, made to run: the guide's sample is TypeScript and
// calls `req.text()` / `req.headers.forEach`, which Express does not have; with
// `express.text()` the raw body is `req.body` and the headers are a plain object.
// npm install standardwebhooks express
import { Webhook } from "standardwebhooks";
import express from "express";

const app = express();
// Don't use express.json() because signature verification needs the raw text body
app.use(express.text({ type: "application/json" }));
app.post("/gemini-callback", async (req, res) => {
  const payload = req.body;
  const headers = {};
  for (const [key, value] of Object.entries(req.headers)) {
    headers[key] = value;
  }
  try {
    const wh = new Webhook(process.env.WEBHOOK_SIGNING_SECRET);
    const event = wh.verify(payload, headers);
    // Process thin payload contents
    if (event.type === "batch.completed" || event.type === "video.generated") {
      const uri = event.data.output_file_uri;
      console.log(`Job finished! Results at: ${uri}`);
    }
    res.status(200).json({ status: "received" });
  } catch (e) {
    console.error("Webhook verification failed:", e);
    res.status(400).send("Invalid signature");
  }
});
const port = Number(process.env.PORT || 8000);
app.listen(port, "127.0.0.1", () => {
  console.log(`Webhook server is running on port ${port}`);
});
