"""A small offline language identifier for ``language:response_language`` (no model files, no network).

Writing system first (Hangul -> ko, kana -> ja, Han -> zh, Thai, Hebrew, Greek and the Indic scripts each
name one language); within Cyrillic and Arabic scripts, letters unique to a language decide (uk, bg, fa,
ur); within Latin and Devanagari scripts, the language whose list of very frequent function words matches
most tokens wins. Codes are ISO 639-1 as in IFEval (langdetect's codes). It is reliable on paragraphs of
ordinary prose and not on a few words; ``detect_language`` returns None when it cannot tell.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

_SCRIPT_LANGUAGE = {"HANGUL": "ko", "THAI": "th", "HEBREW": "he", "GREEK": "el", "BENGALI": "bn", "TAMIL": "ta",
                    "TELUGU": "te", "KANNADA": "kn", "MALAYALAM": "ml", "GUJARATI": "gu", "GURMUKHI": "pa"}
_FUNCTION_WORDS = {
    "en": "the of and to in is that it for was on are with as be this by not or have from at but they you",
    "es": "el la de que y en los las del se por un una para con no es su al lo como más pero sus le ya",
    "fr": "le la les de des et est en du un une que qui dans pour pas sur au avec ce il elle sont ne se",
    "de": "der die das und ist nicht zu den von mit sich des auf für im dem ein eine auch es an als wird",
    "it": "il la di che e è un una per non sono del della in gli le con si da al lo nel anche più ma",
    "pt": "o a os as de que e do da em um uma para com não é no na por mais dos das se ao mas",
    "nl": "de het een en van is dat op te in zijn niet met voor er aan ook als bij maar om door",
    "pl": "i w na z że się nie to do jest jak po co ale od tak czy za przez są jego być",
    "fi": "ja on ei se että oli hän ovat mutta kun myös tai niin kuin joka ole mitä olla vain tämä",
    "vi": "và của là có trong được cho không những với này các một người đã để khi thì cũng",
    "sw": "na ya wa kwa ni za katika la kuwa hii au lakini pia hiyo ambao yake watu sana",
    "tr": "ve bir bu da de için ile çok ama olan gibi daha en ne var kadar sonra ben",
    "hi": "है के में की और को से का एक यह हैं पर भी था नहीं कि लिए ने",
    "mr": "आहे आणि या हे व ला च्या की ते आहेत होते त्या म्हणून पण तर एक",
    "ne": "छ र को मा हो यो छन् पनि गर्न भएको थियो लागि तथा भने गरेको",
}
_FUNCTION_WORDS = {lang: frozenset(words.split()) for lang, words in _FUNCTION_WORDS.items()}
_SCRIPT_ONLY = {"ko", "ja", "zh", "ru", "uk", "bg", "ar", "fa", "ur", *_SCRIPT_LANGUAGE.values()}
SUPPORTED_LANGUAGES = frozenset(_SCRIPT_ONLY | set(_FUNCTION_WORDS))


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if "CJK" in name:
        return "HAN"
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "KANA"
    return name.split(" ")[0]


def _by_function_words(text: str, candidates) -> str | None:
    tokens = re.findall(r"[^\s.,;:!?\"'()\[\]{}\u0964\u0965]+", text.lower())  # not \w: Indic vowel signs are not \w
    scores = {lang: sum(t in _FUNCTION_WORDS[lang] for t in tokens) for lang in candidates}
    best = max(scores.values(), default=0)
    winners = [lang for lang, score in scores.items() if score == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the dominant language of ``text``, or None when unknown/undecidable."""
    scripts = Counter(_script(ch) for ch in text if ch.isalpha())
    if not scripts:
        return None
    if scripts["KANA"] > 0 and scripts["KANA"] + scripts["HAN"] >= max(scripts.values()):
        return "ja"
    script = scripts.most_common(1)[0][0]
    if script == "HAN":
        return "zh"
    if script in _SCRIPT_LANGUAGE:
        return _SCRIPT_LANGUAGE[script]
    if script == "CYRILLIC":
        if re.search("[іїєґІЇЄҐ]", text):
            return "uk"
        return "bg" if "ъ" in text.lower() and not re.search("[ыэЫЭ]", text) else "ru"
    if script == "ARABIC":
        if re.search("[ٹڈڑںے]", text):
            return "ur"
        return "fa" if re.search("[پچژگ]", text) else "ar"
    if script == "DEVANAGARI":
        return _by_function_words(text, ("hi", "mr", "ne"))
    if script == "LATIN":
        return _by_function_words(text, ("en", "es", "fr", "de", "it", "pt", "nl", "pl", "fi", "vi", "sw", "tr"))
    return None
