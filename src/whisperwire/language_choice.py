"""Which language a speech region is decoded in when the session asked for detection
(`language=auto`): sans-I/O, fed the language Whisper detected on each decoded window.

Whisper detects the language on the audio it is given. On the first second of a region it is
often wrong: on 40 FLEURS clips (de, fr, es, pt) the multilingual `base` model said "en" with
probability 0.4-0.6 on most of their first 1-2 s (once with 0.78), where it
detects every clip right, with probability 0.86-1.0, on 6 s. Taking the first partial decode's
language for the whole region (as the policy did) reported a wrong language for 4 of 9 German,
French and Spanish clips in an earlier measurement, 2 of the 10 German ones streamed five at
a time (real time) in ours.

So the language is only *provisional* until it is fixed: every decode of the region detects it
again, on a window that grows with the speech, and nothing is committed under a provisional
language. It is fixed by the first decode whose window holds at least `min_s` seconds with a
detection probability of at least `probability`, or at least `enough_s` seconds whatever the
probability; by the region's last decode at the latest. A region too short to fix its language
with confidence takes the session's last fixed language if it detected another: its last window
is decoded again in that language, as one short region is weaker evidence than the speech
before it. The words that waited for the language are committed by the policy's next decode,
a thorough one (beam search) in that language: the greedy decode that fixed it misheard the
start of an utterance more often ("El uso de cuadro de los blocs" for "El uso adecuado de los
blogs"; on the 10 Spanish clips, five at once: streaming WER 10.2 % -> 9.8 %, offline 8.1 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from whisperwire.words import Hypothesis


@dataclass
class LanguageChoice:
    """One session's detected languages. `region` is the language fixed for the region being
    decoded (None: not yet); `session` the last language fixed with enough evidence."""

    min_s: float = 2.0
    probability: float = 0.9
    enough_s: float = 6.0
    region: str | None = None
    session: str | None = None

    def observe(
        self, requested: str | None, hypothesis: Hypothesis, seconds: float, last: bool
    ) -> bool:
        """Take the answer to a decode of a window of `seconds` made in language `requested`
        (None: detect); `last`: the region's last decode. True when its words may be
        committed: the region's language is fixed and the decode was made in it. False on a
        `last` decode means: decode it again, in `region` (the session's language won over a
        weak detection, or the language was fixed while this decode ran)."""
        language = hypothesis.language
        if requested is not None or language is None:  # forced, or no answer (given up)
            return requested is None or requested == self.region or self.region is None
        if self.region is not None:
            return language == self.region
        sure = hypothesis.language_probability >= self.probability
        if seconds >= self.enough_s or (sure and seconds >= self.min_s):
            self.region = self.session = language
            return True
        if not last:
            return False
        if self.session is not None and self.session != language:
            self.region = self.session
            return False
        self.region = language
        return True

    def end_region(self) -> None:
        self.region = None

    def reset(self) -> None:
        """The session's language setting changed: what was detected no longer holds."""
        self.region = self.session = None
