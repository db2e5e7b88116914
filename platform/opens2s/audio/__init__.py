"""opens2s.audio: the speech stack, each part behind a small interface with an offline CPU default.

io (load/write/validate), features (encoder log-mel), tts (controllable espeak-ng TTS), units
(speech tokenizer), vocoder (units -> wave, streamed), vad (end of turn), asr (transcription, WER),
speaker (speaker embeddings). Import the submodule you need; this package imports nothing heavy.
"""
