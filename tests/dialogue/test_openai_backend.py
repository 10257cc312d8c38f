"""The ``openai`` backend for real: ChatOpenAI against a tiny OpenAI-compatible server started here, which
streams ``chat.completion.chunk`` events over SSE; the reply flows token by token through the graph, the
engine and the voice layer's sentence splitter."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.config import DialogueSettings, Settings
from dialogue.engine import DialogueEngine
from dialogue.events import PolicyChosen, ReplyDone, TextDelta
from dialogue.llm import build_chat_model
from voice.sentences import SentenceSplitter

from .conftest import perception

REPLY = ["I", " hear", " you", ".", " That", " sounds", " really", " hard", ".", " What", " happened", "?"]
TOKEN_DELAY_S = 0.05


class CompletionServer(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        CompletionServer.requests.append({"path": self.path, **body})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            event = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(event)}\n\n".encode()

        self.wfile.write(chunk({"role": "assistant", "content": ""}))
        for token in REPLY:
            time.sleep(TOKEN_DELAY_S)
            self.wfile.write(chunk({"content": token}))
            self.wfile.flush()
        self.wfile.write(chunk({}, "stop") + b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def server() -> Iterator[str]:
    CompletionServer.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CompletionServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def openai_settings(url: str) -> Settings:
    return Settings(
        dialogue=DialogueSettings(llm_backend="openai", openai_base_url=url, openai_model="tiny-test")
    )


async def test_chat_model_streams_from_the_server(server: str) -> None:
    model = build_chat_model(openai_settings(server))
    pieces = [chunk.content async for chunk in model.astream("Hello")]
    assert "".join(pieces) == "".join(REPLY) and len([p for p in pieces if p]) == len(REPLY)
    (request,) = CompletionServer.requests
    assert request["path"] == "/v1/chat/completions" and request["stream"] is True
    assert request["model"] == "tiny-test"


@pytest.mark.integration
async def test_engine_streams_sentences_to_tts_as_they_complete(
    server: str, redis_client, key_prefix
) -> None:
    engine = await DialogueEngine.create(openai_settings(server), redis_client, key_prefix=key_prefix)
    splitter = SentenceSplitter()
    sentence_times: list[tuple[float, str]] = []
    deltas = 0
    started = time.perf_counter()
    events = []
    async for event in engine.reply("oa", "t1", "I lost my job.", perception("sad", -0.6, -0.2)):
        events.append(event)
        if isinstance(event, TextDelta):
            deltas += 1
            for sentence in splitter.push(event.text):  # what voice/session.py hands to Piper
                sentence_times.append((time.perf_counter() - started, sentence))
    done_at = time.perf_counter() - started
    assert isinstance(events[0], PolicyChosen) and events[0].policy == "empathize"
    assert events[0].prosody.length_scale > 1.0
    done = events[-1]
    assert isinstance(done, ReplyDone) and done.text == "I hear you. That sounds really hard."
    assert deltas >= 6  # token by token, not one block
    # the first sentence was ready for TTS well before the reply finished
    assert sentence_times and sentence_times[0][1] == "I hear you."
    assert sentence_times[0][0] < done_at - 3 * TOKEN_DELAY_S
    request = CompletionServer.requests[-1]
    assert request["messages"][0]["role"] == "system" and "sad" in request["messages"][0]["content"]
    assert request["messages"][-1] == {"role": "user", "content": "I lost my job."}
    assert request["max_completion_tokens"] == 50  # the empathize policy's limit
    assert (await engine.history("oa"))[0]["assistant_text"] == done.text
    await engine.aclose()
