"""Codecs: round trips (hypothesis), strict parsing with a reason for every kind of bad row."""

import math
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_dpsynth.data import (
    CategoricalColumn,
    FloatColumn,
    ImageCodec,
    IntegerColumn,
    TabularCodec,
    TabularSchema,
    TextCodec,
    downsample,
)
from hf_dpsynth.data.tabular import NULL_TOKEN
from hf_dpsynth.errors import InvalidRecord, SchemaError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------ text

# Record bodies: any text but NUL and U+FFFD (a model's broken bytes, which decode refuses as malformed).
BODIES = st.text(min_size=1).filter(lambda t: t.strip() and "\x00" not in t and "\ufffd" not in t)


@SETTINGS
@given(
    text=BODIES,
    label=st.sampled_from(["ham", "spam"]),
)
def test_text_round_trip(text, label):
    codec = TextCodec(conditions={"label": ["ham", "spam"]})
    record = {"text": text, "label": label}
    encoded = codec.encode(record)
    assert encoded == f"label: {label}\n{text}"
    assert codec.encode_prompt(record) + codec.encode_body(record) == encoded
    assert codec.decode(encoded) == record


def test_text_rejections_have_reasons():
    codec = TextCodec(conditions={"label": ["ham", "spam"]}, max_chars=20)
    cases = {
        "label: eggs\nhello": "unknown_category",
        "hello": "missing_condition",
        "label: ham\n   ": "empty",
        "label: ham\n" + "x" * 21: "too_long",
    }
    for text, kind in cases.items():
        with pytest.raises(InvalidRecord) as info:
            codec.decode(text)
        assert info.value.kind == kind and info.value.reason
    with pytest.raises(InvalidRecord, match="no field 'text'"):
        codec.encode({"label": "ham"})
    with pytest.raises(InvalidRecord) as info:
        codec.encode({"label": "ham", "text": 3})
    assert info.value.kind == "not_text"


def test_parse_many_counts_and_drops_invalid_outputs():
    codec = TextCodec(conditions={"label": ["ham", "spam"]})
    result = codec.parse_many(["hi there", "", "ok"], prompts=["label: ham\n", "label: spam\n", "label: nope\n"])
    assert result.records == [{"label": "ham", "text": "hi there"}]
    assert (result.num_generated, result.num_valid, result.num_invalid) == (3, 1, 2)
    assert result.invalid_kinds == {"empty": 1, "unknown_category": 1}
    assert result.valid_fraction == pytest.approx(1 / 3)


CHAT = "<|im_start|>user\nWrite one {label} SMS ({lang}) message, a {label} one.<|im_end|>\n<|im_start|>assistant\n"


@SETTINGS
@given(
    text=BODIES,
    label=st.sampled_from(["ham", "spam", "spam+"]),
    lang=st.sampled_from(["en", "en gb", "a.b"]),
)
def test_prompt_template_round_trip(text, label, lang):
    # Values that are prefixes of one another ("spam" / "spam+"), regex metacharacters and a
    # field used twice: the conditions come back exactly, and the body is untouched.
    codec = TextCodec(conditions={"label": ["ham", "spam", "spam+"], "lang": ["en", "en gb", "a.b"]}, prompt_template=CHAT)
    record = {"text": text, "label": label, "lang": lang}
    prompt = codec.encode_prompt(record)
    assert prompt == CHAT.format(label=label, lang=lang)
    assert codec.encode(record) == prompt + text
    assert codec.decode(prompt + text) == record
    assert codec.to_dict()["prompt_template"] == CHAT


def test_prompt_template_rejections():
    codec = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="Write a {label} message: {label}.\n")
    cases = {
        "label: ham\nhello": "missing_condition",           # the default prefix is not this codec's
        "Write a eggs message: eggs.\nhello": "missing_condition",
        "Write a ham message: spam.\nhello": "missing_condition",  # a repeated field must agree
        "Write a ham message: ham.\n  ": "empty",
    }
    for text, kind in cases.items():
        with pytest.raises(InvalidRecord) as info:
            codec.decode(text)
        assert info.value.kind == kind and info.value.reason
    with pytest.raises(InvalidRecord) as info:
        codec.encode_prompt({"label": "eggs"})
    assert info.value.kind == "unknown_category"
    conditions = {"label": ["ham", "spam"]}
    for template, match in [
        ("Write a message.", r"no field for condition\(s\) \['label'\]"),
        ("{lab} message", "not a condition name"),
        ("{label!r} message", "not a condition name"),
        ("{label:>5} message", "not a condition name"),
        ("{0} message", "not a condition name"),
        ("{label message", "not a valid format string"),
        ("", "non-empty string"),
    ]:
        with pytest.raises(SchemaError, match=match):
            TextCodec(conditions=conditions, prompt_template=template)
    # A condition-free template is a fixed instruction; literal braces are written doubled.
    plain = TextCodec(prompt_template="Reply in JSON {{...}}:\n")
    assert plain.encode({"text": "x"}) == "Reply in JSON {...}:\nx" and plain.decode("Reply in JSON {...}:\nx") == {"text": "x"}


def test_condition_lists_are_declared_and_checked():
    with pytest.raises(SchemaError, match="declared"):
        TextCodec(conditions={"label": "spam"})
    with pytest.raises(SchemaError, match="more than once"):
        TextCodec(conditions={"label": ["a", "a"]})
    with pytest.raises(SchemaError, match="also a condition"):
        TextCodec("label", conditions={"label": ["a"]})
    assert TextCodec(conditions={"label": ["a", "b"]}).prompt_for(label="b") == "label: b\n"


# ------------------------------------------------------------------------------------ tabular

_names = st.text(alphabet=string.ascii_lowercase + "-_", min_size=1, max_size=10)
_category = st.text(alphabet=string.ascii_letters + string.digits + "-<=>.() ", min_size=1, max_size=12).map(
    str.strip
).filter(lambda v: v and ", " not in v)


@st.composite
def schemas_and_rows(draw):
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    columns, strategies = [], {}
    for name in names:
        nullable = draw(st.booleans())
        kind = draw(st.sampled_from(["categorical", "integer", "float"]))
        if kind == "categorical":
            cats = tuple(draw(st.lists(_category, min_size=1, max_size=5, unique=True).filter(lambda c: NULL_TOKEN not in c)))
            columns.append(CategoricalColumn(name, cats, nullable=nullable))
            value = st.sampled_from(cats)
        elif kind == "integer":
            lo = draw(st.integers(-10**6, 10**6))
            hi = draw(st.integers(lo, lo + 10**6))
            columns.append(IntegerColumn(name, lo, hi, nullable=nullable))
            value = st.integers(lo, hi)
        else:
            precision = draw(st.integers(0, 4))
            lo = round(draw(st.floats(-1e6, 1e6, allow_nan=False)), precision)
            hi = round(draw(st.floats(lo, lo + 1e6, allow_nan=False)), precision)
            columns.append(FloatColumn(name, lo, hi, precision=precision, nullable=nullable))
            value = st.floats(lo, hi, allow_nan=False)
        strategies[name] = st.one_of(st.none(), value) if nullable else value
    row = draw(st.fixed_dictionaries(strategies))
    return TabularSchema(columns), row


@SETTINGS
@given(schemas_and_rows(), st.integers(0, 2**64 - 1))
def test_tabular_round_trip_up_to_declared_precision(schema_row, order_seed):
    schema, row = schema_row
    codec = TabularCodec(schema)
    decoded = codec.decode(codec.encode(row, order_seed=order_seed))
    assert list(decoded) == list(schema.names)
    for column in schema.columns:
        got, want = decoded[column.name], row[column.name]
        if want is None:
            assert got is None
        elif isinstance(column, FloatColumn):
            # Rounded to the declared precision, and still within the declared bounds.
            assert abs(got - want) <= 0.5 * 10 ** -column.precision + 1e-9 * max(1.0, abs(want))
            assert column.lower <= got <= column.upper
        else:
            assert got == want


def test_column_order_is_shuffled_per_example_and_seeded():
    schema = TabularSchema([IntegerColumn(f"c{i}", 0, 9) for i in range(6)])
    codec = TabularCodec(schema)
    row = {f"c{i}": i for i in range(6)}
    orders = {tuple(p.split(" is ")[0] for p in codec.encode(row, order_seed=s).split(", ")) for s in range(30)}
    assert len(orders) > 10
    assert codec.encode(row, order_seed=7) == codec.encode(row, order_seed=7)
    assert codec.encode(row) == ", ".join(f"c{i} is {i}" for i in range(6))  # no seed: schema order
    assert TabularCodec(schema, shuffle_columns=False).encode(row, order_seed=7) == codec.encode(row)


def test_tabular_prompt_template():
    schema = TabularSchema([CategoricalColumn("sex", ("Female", "Male")), IntegerColumn("age", 17, 90)])
    codec = TabularCodec(schema, conditions={"sex": ["Female", "Male"]}, prompt_template="A census row ({sex}):\n")
    text = codec.encode({"sex": "Male", "age": 40})
    assert text == "A census row (Male):\nsex is Male, age is 40"
    assert codec.decode(text) == {"sex": "Male", "age": 40}


@pytest.fixture
def adultish():
    return TabularCodec(
        TabularSchema(
            [
                IntegerColumn("age", 17, 90),
                CategoricalColumn("sex", ("Female", "Male")),
                FloatColumn("score", 0.0, 1.0, precision=2, nullable=True),
            ]
        )
    )


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("", "empty", "empty"),
        ("age is 30, sex is Male", "missing_column", "'score'"),
        ("age is 30, sex is Male, score is 0.5, age is 31", "duplicate_column", "more than once"),
        ("age is 30, sex is Male, score is 0.5, height is 2", "unknown_column", "'height'"),
        ("age is 30, sex is Male, score 0.5", "malformed", "not a 'column is value' pair"),
        ("age is 30, sex is Other, score is 0.5", "unknown_category", "'Other'"),
        ("age is 3O, sex is Male, score is 0.5", "not_a_number", "not an integer"),
        ("age is 30.5, sex is Male, score is 0.5", "not_a_number", "not an integer"),
        ("age is 30, sex is Male, score is lots", "not_a_number", "not a number"),
        ("age is 91, sex is Male, score is 0.5", "out_of_bounds", "[17, 90]"),
        ("age is 30, sex is Male, score is 1.5", "out_of_bounds", "[0.0, 1.0]"),
        ("age is 30, sex is Male, score is nan", "not_a_number", "not a number"),
        ("age is 30, sex is Male, score is inf", "not_a_number", "not a number"),
        ("age is 30, sex is missing, score is 0.5", "unknown_category", "'missing'"),
        ("age is 30, sex is Male,\nscore is 0.5", "malformed", "one line"),
    ],
)
def test_tabular_parser_rejects_each_malformed_row_with_its_reason(adultish, text, kind, reason):
    with pytest.raises(InvalidRecord) as info:
        adultish.decode(text)
    assert info.value.kind == kind
    assert reason in info.value.reason


def test_tabular_nulls_and_nan(adultish):
    assert adultish.decode("score is missing, sex is Female, age is 40") == {"age": 40, "sex": "Female", "score": None}
    # NaN in a nullable numeric column is a missing value (pandas' convention) ...
    assert "score is missing" in adultish.encode({"age": 40, "sex": "Female", "score": float("nan")})
    # ... but infinite values, and NaN in a non-nullable column, are errors.
    with pytest.raises(InvalidRecord) as info:
        adultish.encode({"age": 40, "sex": "Female", "score": math.inf})
    assert info.value.kind == "not_finite"
    with pytest.raises(InvalidRecord) as info:
        adultish.encode({"age": float("nan"), "sex": "Female", "score": 0.1})
    assert info.value.kind == "not_finite"
    with pytest.raises(InvalidRecord, match="not declared nullable"):
        adultish.encode({"age": None, "sex": "Female", "score": 0.1})


def test_tabular_clip_only_on_request(adultish):
    row = {"age": 120, "sex": "Male", "score": -3.0}
    with pytest.raises(InvalidRecord, match="on_out_of_bounds='clip'"):
        adultish.encode(row)
    assert adultish.schema.normalise(row, clip=True) == {"age": 90, "sex": "Male", "score": 0.0}


def test_schema_declarations_are_checked():
    with pytest.raises(SchemaError, match="declare"):
        CategoricalColumn("sex", ())
    with pytest.raises(SchemaError, match="reserves"):
        CategoricalColumn("city", ("Paris, France",))
    with pytest.raises(SchemaError, match="reserved for missing"):
        CategoricalColumn("x", ("missing",), nullable=True)
    with pytest.raises(SchemaError, match="above upper"):
        IntegerColumn("age", 5, 1)
    with pytest.raises(SchemaError, match="finite"):
        FloatColumn("x", 0.0, math.inf)
    with pytest.raises(SchemaError, match="more decimals than precision=0"):
        FloatColumn("x", 0.0, 1.5, precision=0)
    with pytest.raises(SchemaError, match="more than once"):
        TabularSchema([IntegerColumn("a", 0, 1), IntegerColumn("a", 0, 1)])
    with pytest.raises(SchemaError, match="may not contain"):
        TabularSchema([IntegerColumn("what is it", 0, 1)])
    with pytest.raises(SchemaError, match="does not match the data"):
        TabularSchema([IntegerColumn("age", 0, 1)]).check_columns(["sex"])


def test_schema_dict_round_trip():
    schema = TabularSchema(
        [IntegerColumn("age", 17, 90), CategoricalColumn("sex", ("F", "M"), nullable=True), FloatColumn("x", 0, 1, 3)]
    )
    assert TabularSchema.from_dict(schema.to_dict()) == schema
    with pytest.raises(SchemaError, match="type 'text'"):
        TabularSchema.from_dict({"columns": [{"name": "a", "type": "text"}]})
    with pytest.raises(SchemaError, match="#0"):
        TabularSchema.from_dict({"columns": [{"name": "a", "type": "integer", "lower": 0}]})


def test_tabular_rounding_is_declared(adultish):
    assert "score to 2 decimals" in adultish.rounding
    assert TabularCodec(TabularSchema([IntegerColumn("a", 0, 1)])).rounding is None


# ------------------------------------------------------------------------------------ image


@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    levels=st.integers(2, 36),
    data=st.data(),
)
def test_image_round_trip_exact_for_integer_levels(shape, levels, data):
    codec = ImageCodec(shape, levels)
    flat = data.draw(st.lists(st.integers(0, levels - 1), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
    image = np.asarray(flat, dtype=np.int64).reshape(shape)
    text = codec.encode({"image": image})
    assert text.count("\n") == shape[0] - 1 and all(len(line) == shape[1] for line in text.split("\n"))
    np.testing.assert_array_equal(codec.decode(text)["image"], image)


@SETTINGS
@given(levels=st.integers(2, 36), input_max=st.floats(1.0, 1000.0), data=st.data())
def test_image_round_trip_within_declared_rounding(levels, input_max, data):
    codec = ImageCodec((4, 5), levels, input_max=input_max)
    values = data.draw(st.lists(st.floats(0.0, input_max), min_size=20, max_size=20))
    image = np.asarray(values).reshape(4, 5)
    decoded = codec.decode(codec.encode({"image": image}))["image"]
    assert np.max(np.abs(decoded - image)) <= codec.max_rounding_error * (1 + 1e-9)
    assert "rounded" in codec.rounding


def test_digits_scale_is_exact_and_declared():
    codec = ImageCodec((8, 8), 17)
    assert codec.alphabet == "0123456789ABCDEFG"
    assert "exactly" in codec.rounding
    image = np.arange(64).reshape(8, 8) % 17
    assert codec.encode({"image": image.tolist()}).split("\n")[0] == "01234567"
    assert codec.encode({"image": image.tolist()}).split("\n")[2] == "G0123456"  # 16..23 mod 17
    np.testing.assert_array_equal(codec.decode(codec.encode({"image": image.tolist()}))["image"], image)


def test_image_conditioning_prefix():
    codec = ImageCodec((2, 2), 4, conditions={"label": [str(d) for d in range(10)]})
    text = codec.encode({"label": "7", "image": [[0, 1], [2, 3]]})
    assert text == "label: 7\n01\n23"
    assert codec.decode(text)["label"] == "7"
    templated = ImageCodec((2, 2), 4, conditions={"label": [str(d) for d in range(10)]}, prompt_template="Digit {label}:\n")
    text = templated.encode({"label": "7", "image": [[0, 1], [2, 3]]})
    assert text == "Digit 7:\n01\n23"
    assert templated.decode(text)["label"] == "7" and templated.decode(text)["image"].tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        (np.zeros((8, 7)), "shape"),
        (np.zeros((8, 8, 1)), "shape"),
        ([[0] * 8] * 7 + [[0] * 7], "shape"),
        (np.zeros((8, 8), dtype=bool), "dtype"),
        (np.array([["a"] * 8] * 8), "dtype"),
        (np.full((8, 8), np.nan), "not_finite"),
        (np.full((8, 8), 17), "out_of_bounds"),
        (np.full((8, 8), -1), "out_of_bounds"),
    ],
)
def test_image_input_of_wrong_shape_or_dtype_is_refused(image, kind):
    with pytest.raises(InvalidRecord) as info:
        ImageCodec((8, 8), 17).encode({"image": image})
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("00\n00", "shape"),
        ("000\n000\n000", "shape"),
        ("00\n000\n00", "shape"),
        ("00\n0x\n00", "alphabet"),
    ],
)
def test_image_parser_checks_shape_and_alphabet(text, kind):
    with pytest.raises(InvalidRecord) as info:
        ImageCodec((3, 2), 4).decode(text)
    assert info.value.kind == kind


def test_image_codec_declarations():
    with pytest.raises(SchemaError, match="one distinct symbol per level"):
        ImageCodec((8, 8), 40)
    with pytest.raises(SchemaError, match="one distinct symbol"):
        ImageCodec((8, 8), 3, alphabet="aab")
    with pytest.raises(SchemaError, match="whitespace"):
        ImageCodec((8, 8), 2, alphabet="a ")
    assert ImageCodec((8, 8), 40, alphabet="".join(chr(0x100 + i) for i in range(40))).levels == 40


def test_downsample_mean_pools():
    image = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(downsample(image, 2), [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(InvalidRecord, match="multiples"):
        downsample(np.zeros((5, 4)), 2)
    # 28x28 8-bit -> 14x14 -> 17 levels: within the declared rounding of the pooled value.
    rng = np.random.default_rng(0)
    mnist_like = rng.integers(0, 256, size=(28, 28))
    codec = ImageCodec((14, 14), 17, input_max=255)
    pooled = downsample(mnist_like, 2)
    decoded = codec.decode(codec.encode({"image": pooled}))["image"]
    assert np.max(np.abs(decoded - pooled)) <= codec.max_rounding_error + 1e-9


DESCRIBED = {"label": {"ham": "an everyday personal text message", "spam": "an everyday personal text message, spam"}}


@SETTINGS
@given(text=BODIES, label=st.sampled_from(["ham", "spam"]))
def test_label_descriptions_fill_the_template_and_decode_back_to_the_label(text, label):
    # One description is a prefix of the other: the longest matches first, the label comes back exactly.
    only = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="Write {label_description}.\n",
                     descriptions=DESCRIBED)
    record = {"label": label, "text": text}
    assert only.encode_prompt(record) == f"Write {DESCRIBED['label'][label]}.\n"
    assert only.decode(only.encode(record)) == record
    both = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="[{label}] {label_description}: ",
                     descriptions=DESCRIBED)
    assert both.decode(both.encode(record)) == record
    assert only.to_dict()["descriptions"] == DESCRIBED and only.descriptions == DESCRIBED


def test_label_descriptions_are_checked():
    both = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template="[{label}] {label_description}: ",
                     descriptions=DESCRIBED)
    with pytest.raises(InvalidRecord, match="describes 'spam'") as info:
        both.decode(f"[ham] {DESCRIBED['label']['spam']}: hello")  # the value and its description disagree
    assert info.value.kind == "missing_condition"
    conditions = {"label": ["ham", "spam"]}
    for descriptions, template, match in [
        ({"label": {"ham": "a"}}, "{label_description}", "exactly the values"),
        ({"label": {"ham": "a", "spam": "a"}}, "{label_description}", "distinct"),
        ({"label": {"ham": "a", "spam": " "}}, "{label_description}", "non-empty"),
        ({"lbl": {"ham": "a", "spam": "b"}}, "{label_description}", "not a condition"),
        ({"label": {"ham": "a", "spam": "b"}}, None, "give prompt_template too"),
        (None, "{label_description}", "not a condition name"),  # no descriptions: no such field
    ]:
        with pytest.raises(SchemaError, match=match):
            TextCodec(conditions=conditions, prompt_template=template, descriptions=descriptions)


KEYWORD_TEMPLATE = "Write {label_description}.{keywords}\n"


@SETTINGS
@given(text=BODIES, label=st.sampled_from(["ham", "spam"]),
       words=st.lists(st.sampled_from(["free", "prize", "home", "later"]), max_size=3, unique=True))
def test_keywords_fill_their_field_and_decode_reads_the_prefix_without_them(text, label, words):
    codec = TextCodec(conditions={"label": ["ham", "spam"]}, prompt_template=KEYWORD_TEMPLATE, descriptions=DESCRIBED)
    record = {"label": label, "text": text}
    plain = f"Write {DESCRIBED['label'][label]}.\n"
    assert codec.encode_prompt(record) == plain  # training texts and keyword-less prompts: the field is empty
    prompt = codec.prompt_for(label=label, keywords=words)
    assert prompt == (f"Write {DESCRIBED['label'][label]}. Use the words: {', '.join(words)}.\n" if words else plain)
    assert codec.decode(codec.encode(record)) == record
    assert codec.takes_keywords and codec.to_dict()["keyword_phrase"] == " Use the words: {words}."


def test_keyword_fields_are_checked():
    conditions = {"label": ["ham", "spam"]}
    own = TextCodec(conditions=conditions, prompt_template="{label}:{keywords}\n", keyword_phrase=" (say {words})")
    assert own.prompt_for(label="ham", keywords=["a", "b"]) == "ham: (say a, b)\n"
    with pytest.raises(SchemaError, match="no .keywords. field"):
        TextCodec(conditions=conditions, prompt_template="{label}\n").prompt_for(label="ham", keywords=["a"])
    with pytest.raises(SchemaError, match="needs a prompt_template|need a prompt_template"):
        TextCodec(conditions=conditions).prompt_for(label="ham", keywords=["a"])
    with pytest.raises(SchemaError, match="keyword_phrase is written by"):
        TextCodec(conditions=conditions, prompt_template="{label}\n", keyword_phrase="{words}")
    with pytest.raises(SchemaError, match="one \\{words\\} field"):
        TextCodec(conditions=conditions, prompt_template="{label}{keywords}", keyword_phrase="no field")
    with pytest.raises(SchemaError, match="without commas"):
        own.prompt_for(label="ham", keywords=["a,b"])
    with pytest.raises(SchemaError, match="keyword field"):
        TextCodec(conditions={"keywords": ["a", "b"]}, prompt_template="{keywords}")
