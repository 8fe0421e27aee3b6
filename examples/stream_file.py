import json
import sys

from faster_whisper.audio import decode_audio  # any audio file -> 16 kHz mono float32
from websockets.sync.client import connect

audio = decode_audio(sys.argv[1])
url = sys.argv[2] if len(sys.argv) > 2 else "ws://localhost:9002/"
with connect(url + "?encoding=f32le&sample_rate=16000") as ws:
    for i in range(0, len(audio), 1600):  # 100 ms frames
        ws.send(audio[i : i + 1600].tobytes())
    ws.send(json.dumps({"type": "end"}))
    for message in ws:  # until the server closes the session
        event = json.loads(message)
        if event["type"] == "final":
            print(event["text"], flush=True)
