"""Every IFEval checker with following and violating responses, borderline counts included; loose mode;
the language detector; kwargs validation."""
import pytest

from nemocascade.rewards.ifeval import (CHECKERS, check_instructions, detect_language, follows, loose_variants,
                                        validate_kwargs)

FIVE_WORDS = "one two three four five"
THREE_SENTENCES = "Dr. Smith paid 3.14 dollars. He left! Was it fine?"

CAPS_AT_LEAST_2 = {"capital_frequency": 2, "capital_relation": "at least"}
CAPS_LESS_THAN_2 = {"capital_frequency": 2, "capital_relation": "less than"}

CASES = [  # (instruction id, kwargs, response, follows strictly)
    ("change_case:english_lowercase", {}, "all lower case here, 42.", True),
    ("change_case:english_lowercase", {}, "one Capital letter", False),
    ("change_case:english_lowercase", {}, "123 !!", False),  # no cased letters at all
    ("change_case:english_capital", {}, "ALL CAPS, 42!", True),
    ("change_case:english_capital", {}, "ALL CAPS but one", False),
    ("change_case:capital_word_frequency", CAPS_AT_LEAST_2, "NASA and ESA fly", True),
    ("change_case:capital_word_frequency", CAPS_AT_LEAST_2, "NASA and Esa fly", False),
    ("change_case:capital_word_frequency", CAPS_LESS_THAN_2, "NASA fly", True),
    ("change_case:capital_word_frequency", CAPS_LESS_THAN_2, "NASA ESA", False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, FIVE_WORDS, True),
    ("length_constraints:number_words", {"num_words": 6, "relation": "at least"}, FIVE_WORDS, False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, FIVE_WORDS, False),
    ("length_constraints:number_words", {"num_words": 6, "relation": "less than"}, FIVE_WORDS, True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at most"}, FIVE_WORDS, True),
    ("length_constraints:number_words", {"num_words": 4, "relation": "at most"}, FIVE_WORDS, False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "exactly"}, FIVE_WORDS, True),
    ("length_constraints:number_words", {"num_words": 4, "relation": "exactly"}, FIVE_WORDS, False),
    ("length_constraints:number_words", {"num_words": 4, "relation": "more than"}, FIVE_WORDS, True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "more than"}, FIVE_WORDS, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "exactly"}, THREE_SENTENCES, True),
    ("length_constraints:number_sentences", {"num_sentences": 4, "relation": "exactly"}, THREE_SENTENCES, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, THREE_SENTENCES, False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, THREE_SENTENCES, True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First part.\n***\nSecond part.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nFirst.\n***\nSecond.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\n\n***\nSecond.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "Start here.\n\n\"Then, we end.", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "Start here.\n\nThereafter we end.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "then"},
     "Start here.\n\nThen we end.", False),
    ("keywords:existence", {"keywords": ["apple", "Pie"]}, "An Apple pie.", True),
    ("keywords:existence", {"keywords": ["apple", "pie"]}, "An apple tart.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A badge is fine.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "That is BAD.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "cat CAT dog", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat CAT dog", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "cat CAT dog", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "Zzz", True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 4, "let_relation": "at least"}, "Zzz", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "less than"}, "Zzz", False),
    ("punctuation:no_comma", {}, "No commas here.", True),
    ("punctuation:no_comma", {}, "One, comma.", False),
    ("detectable_format:title", {}, "<<A Title>>\nBody", True),
    ("detectable_format:title", {}, "<<  >>\nBody", False),
    ("detectable_format:title", {}, "<<broken\n>>", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '{"a": [1, 2}', False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two\nthree", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* one\n- two\nthree", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "* one\n- two", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** **", False),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nintro\nSECTION 2\nbody", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 3},
     "SECTION 1\nintro\nSECTION 2\nbody", False),
    ("detectable_format:constrained_response", {}, "Thinking... My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "My answer is perhaps.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, "Dear [name], at [address].", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\nP.S. bye", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello. PS bye", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\np.p.s. later", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. any other questions?  ", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Done.", False),
    ("startend:start_checker", {"start_phrase": "Dear team"}, "dear team, hello", True),
    ("startend:start_checker", {"start_phrase": "Dear team"}, "Hello dear team", False),
    ("startend:quotation", {}, '  "quoted all the way"  ', True),
    ("startend:quotation", {}, '"not closed', False),
    ("startend:quotation", {}, '"', False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a poem. Roses...", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Roses... Write a poem.", False),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "One.\n******\n\n******\nTwo.", False),
    ("language:response_language", {"language": "de"}, "Das ist nicht gut, und die Katze ist auf dem Dach.", True),
    ("language:response_language", {"language": "de"}, "This is not good, and the cat is on the roof.", False),
]


def test_every_checker_has_a_following_and_a_violating_case():
    followed = {i for i, _, _, ok in CASES if ok}
    violated = {i for i, _, _, ok in CASES if not ok}
    assert followed == violated == set(CHECKERS)
    assert len(CHECKERS) >= 15


@pytest.mark.parametrize("instruction_id,kwargs,response,expected", CASES)
def test_checker(instruction_id, kwargs, response, expected):
    assert follows(instruction_id, response, validate_kwargs(instruction_id, kwargs)) is expected


def test_loose_mode_forgives_a_preamble_and_markdown_stars():
    kwargs = validate_kwargs("startend:quotation", {})
    response = 'Sure, here it is:\n"quoted answer"'
    assert not follows("startend:quotation", response, kwargs)
    assert follows("startend:quotation", response, kwargs, loose=True)
    starred = "**<<Title>>**"
    assert follows("detectable_format:title", starred, {}) and len(loose_variants(starred)) == 8
    lowered = validate_kwargs("change_case:english_lowercase", {})
    assert not follows("change_case:english_lowercase", "Header\nall lower\nFooter", lowered)
    assert follows("change_case:english_lowercase", "Header\nall lower\nFooter", lowered, loose=True)
    assert not follows("change_case:english_lowercase", "Header\nNot Lower\nFooter", lowered, loose=True)


def test_several_instructions_on_one_prompt_and_empty_responses():
    results = check_instructions("apples, pears", ["keywords:existence", "punctuation:no_comma"],
                                 [{"keywords": ["apples"]}, {}])
    assert [(r.strict, r.loose) for r in results] == [(True, True), (False, False)]
    assert not check_instructions("   ", ["punctuation:no_comma"], [{}])[0].strict  # empty never follows


def test_language_detector():
    samples = {
        "en": "The weather is nice today and we are going to the park with the children.",
        "es": "El perro de mi vecino es muy grande y le gusta correr por el parque con los niños.",
        "fr": "Le chat de la voisine est dans le jardin et il ne veut pas rentrer pour le dîner.",
        "it": "Il gatto della vicina è nel giardino e non vuole rientrare per la cena con gli altri.",
        "pt": "O gato da vizinha está no jardim e não quer voltar para o jantar com os outros.",
        "ru": "Сегодня хорошая погода, и мы идём в парк с детьми.",
        "uk": "Сьогодні гарна погода, і ми йдемо в парк з дітьми.",
        "ja": "今日はとても良い天気なので、公園に行きます。",
        "zh": "今天天气很好，我们去公园散步。",
        "ko": "오늘은 날씨가 좋아서 공원에 갑니다.",
        "ar": "الطقس جميل اليوم ونحن ذاهبون إلى الحديقة مع الأطفال.",
        "hi": "आज मौसम अच्छा है और हम बच्चों के साथ पार्क में जा रहे हैं।",
    }
    for code, sentence in samples.items():
        assert detect_language(sentence) == code, (code, detect_language(sentence))
    assert detect_language("12345 !!!") is None


def test_kwargs_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown instruction id 'made:up'"):
        validate_kwargs("made:up", {})
    with pytest.raises(ValueError, match="missing kwarg 'num_words'"):
        validate_kwargs("length_constraints:number_words", {"relation": "at least"})
    with pytest.raises(ValueError, match="'relation' must be one of"):
        validate_kwargs("length_constraints:number_words", {"num_words": 3, "relation": "around"})
    with pytest.raises(TypeError, match="'num_words' must be int"):
        validate_kwargs("length_constraints:number_words", {"num_words": "3", "relation": "at least"})
    with pytest.raises(ValueError, match="unexpected kwargs"):
        validate_kwargs("punctuation:no_comma", {"comma": 1})
    with pytest.raises(ValueError, match="not supported"):
        validate_kwargs("language:response_language", {"language": "xx"})
    with pytest.raises(ValueError, match="2 entries for 1 instructions"):
        check_instructions("x", ["punctuation:no_comma"], [{}, {}])
    # IFEval's released data fills unused kwargs with None and may store ints as floats.
    assert validate_kwargs("length_constraints:number_words",
                           {"num_words": 3.0, "relation": "at least", "keywords": None}) == {
        "num_words": 3, "relation": "at least"}
