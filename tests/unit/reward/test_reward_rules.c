/* test_reward_rules.c: table-driven cases for the reward rules of services/reward/rewards.h
 * (answer extraction, answer equivalence, format, language consistency, scoring, weights).
 * Every expected value in the tables was worked out by hand from the rule text in
 * rewards.h / issue 3, not by running the code. Strings carry explicit lengths (S()) so
 * cases may hold NUL bytes. */
#include <math.h>
#include <string.h>

#include "../../harness.h"
#include "rewards.h"

#define S(x) x, sizeof(x) - 1

/* ---- aha_reward_equivalent(answer, reference) ---- */
typedef struct {
    const char *a;
    size_t an;
    const char *r;
    size_t rn;
    int eq;
} eq_case;

static const eq_case eq_cases[] = {
    /* integers */
    {S("5"), S("5"), 1},
    {S("5"), S("6"), 0},
    {S("-3"), S("-3"), 1},
    {S("-3"), S("3"), 0},
    {S("+7"), S("7"), 1},
    {S("1,000"), S("1000"), 1},
    {S("1000"), S("1,000"), 1},
    {S("1,000,000"), S("1000000"), 1},
    {S("1,00"), S("100"), 0},
    {S("007"), S("7"), 1},
    {S("0"), S("-0"), 1},
    {S("1 000"), S("1000"), 1},
    {S("123456789012345678901234567890"), S("123456789012345678901234567890"), 1},
    {S("123456789012345678901234567890"), S("123456789012345678901234567891"), 0},
    /* decimals */
    {S("0.5"), S("0.50"), 1},
    {S(".5"), S("0.5"), 1},
    {S("2.0"), S("2"), 1},
    {S("2."), S("2"), 1},
    {S("3.14"), S("3.141"), 0},
    {S("-0.25"), S("-1/4"), 1},
    {S("5"), S("05.000"), 1},
    {S("1,234.5"), S("1234.50"), 1},
    /* fractions against decimals, exactly */
    {S("0.5"), S("1/2"), 1},
    {S("1/2"), S("0.5"), 1},
    {S("1/3"), S("0.333"), 0},
    {S("0.333"), S("1/3"), 0},
    {S("\\frac{1}{2}"), S("0.5"), 1},
    {S("\\dfrac12"), S("1/2"), 1},
    {S("\\tfrac{1}{2}"), S("\\frac{1}{2}"), 1},
    {S("\\frac12"), S("0.5"), 1},
    {S("\\frac{2}{4}"), S("1/2"), 1},
    {S("-\\frac{3}{4}"), S("-0.75"), 1},
    {S("\\frac{-3}{4}"), S("-3/4"), 1},
    {S("\\frac{3}{4}"), S("3/5"), 0},
    {S("6/4"), S("3/2"), 1},
    {S("1/2"), S("2/4"), 1},
    {S("\\frac{1}{3}"), S("0.3333333333"), 0},
    {S("\\frac{0.5}{2}"), S("1/4"), 1},
    /* scientific notation */
    {S("1e3"), S("1000"), 1},
    {S("1.5E-2"), S("0.015"), 1},
    {S("1.5\\times10^{3}"), S("1500"), 1},
    {S("2 \\cdot 10^3"), S("2000"), 1},
    {S("3\xc3\x97" "10^2"), S("300"), 1},
    {S("1e-3"), S("0.001"), 1},
    {S(".5e1"), S("5"), 1},
    {S("2.5e-1"), S("1/4"), 1},
    {S("1e40"), S("1e41"), 0},
    {S("1e400"), S("1e400"), 1},
    /* percentages */
    {S("50\\%"), S("50%"), 1},
    {S("50%"), S("50\\%"), 1},
    {S("50"), S("50%"), 1},
    {S("50"), S("50\\%"), 1},
    {S("50%"), S("50"), 0},
    {S("0.5"), S("50%"), 0},
    {S("12.5%"), S("12.5\\%"), 1},
    {S("25%"), S("50%"), 0},
    {S("50 \\%"), S("50%"), 1},
    /* currency and units */
    {S("\\$5"), S("5"), 1},
    {S("$5$"), S("5"), 1},
    {S("\\$1,000"), S("1000"), 1},
    {S("\\$ 5.00"), S("5"), 1},
    {S("5 \\text{ cm}"), S("5"), 1},
    {S("5\\text{cm}"), S("5"), 1},
    {S("5\\text{ cm}^2"), S("5"), 1},
    {S("5 cm"), S("5"), 1},
    {S("10 apples"), S("10"), 1},
    {S("5 \\mbox{dollars}"), S("5"), 1},
    {S("\\frac{1}{2}\\text{ cup}"), S("0.5"), 1},
    {S("5 cm"), S("6"), 0},
    {S("2x"), S("2"), 0},
    {S("5 cm^2"), S("5"), 0},
    {S("5\\text{ m}^{2}"), S("5"), 1},
    {S("3 \\text{ and } 4"), S("3"), 0},
    {S("7\\text{ m/s}"), S("7"), 1},
    /* degrees */
    {S("90^\\circ"), S("90"), 1},
    {S("90^{\\circ}"), S("90"), 1},
    {S("90\xc2\xb0"), S("90"), 1},
    {S("45^\\circ"), S("90"), 0},
    /* a leading "x =" */
    {S("x = 5"), S("5"), 1},
    {S("x=5"), S("5"), 1},
    {S("y = -2"), S("-2"), 1},
    {S("x_1 = 3"), S("3"), 1},
    {S("x = 5"), S("x = 5"), 1},
    {S("5"), S("x = 5"), 1},
    {S("x == 5"), S("5"), 0},
    {S("x = 4"), S("5"), 0},
    {S("x \\in [1, 2]"), S("[1,2]"), 1},
    {S("x \\in (0,1)"), S("[0,1]"), 0},
    {S("x \\infty"), S("\\infty"), 0},
    /* LaTeX noise */
    {S("\\left( 1, 2 \\right)"), S("(1,2)"), 1},
    {S("\\displaystyle \\frac{1}{2}"), S("0.5"), 1},
    {S("1\\,000"), S("1000"), 1},
    {S("1{,}000"), S("1000"), 1},
    {S("3\\!"), S("3"), 1},
    {S("\\(7\\)"), S("7"), 1},
    {S("\\[ 7 \\]"), S("7"), 1},
    {S("\\text{Paris}"), S("paris"), 1},
    {S("  New   York "), S("new york"), 1},
    {S("Paris."), S("Paris"), 1},
    {S("\\sqrt{2}"), S("\\sqrt{2}"), 1},
    {S("\\sqrt{2}"), S("\\sqrt{3}"), 0},
    {S("2\\pi"), S("2 \\pi"), 1},
    {S("\\frac{\\sqrt{3}}{2}"), S("\\dfrac{\\sqrt{3}}{2}"), 1},
    {S("\xe2\x88\x92" "5"), S("-5"), 1},
    {S("0.1+0.2"), S("0.3"), 0},
    /* tuples and intervals */
    {S("(1, 2)"), S("(1,2)"), 1},
    {S("(1,2)"), S("(2,1)"), 0},
    {S("[1,2)"), S("(1,2)"), 0},
    {S("[1, 2)"), S("[1,2)"), 1},
    {S("(0.5, 1/3)"), S("(\\frac{1}{2}, \\frac{1}{3})"), 1},
    {S("(1,2,3)"), S("(1,2)"), 0},
    {S("(1,2)"), S("(1,2,3)"), 0},
    {S("1, 2, 3"), S("1,2,3"), 1},
    {S("1, 2.0, 3"), S("1,2,3"), 1},
    {S("(1,2)"), S("1,2"), 0},
    {S("\\{1, 2\\}"), S("\\{1,2\\}"), 1},
    {S("((1,2),(3,4.0))"), S("((1, 2), (3, 4))"), 1},
    {S("((1,2),(3,5))"), S("((1, 2), (3, 4))"), 0},
    {S("(-\\infty, 0]"), S("(-\\infty,0]"), 1},
    {S("(1,2) \\cup (3,4)"), S("(1,2)\\cup(3,4)"), 1},
    /* multiple choice letters */
    {S("B"), S("B"), 1},
    {S("(B)"), S("B"), 1},
    {S("\\text{B}"), S("B"), 1},
    {S("B"), S("(B)"), 1},
    {S("b"), S("B"), 1},
    {S("(C)"), S("B"), 0},
    {S("\\text{(B)}"), S("B"), 1},
    {S("(B) 12"), S("B"), 1},
    {S("(C) 12"), S("B"), 0},
    {S("B"), S("\\text{B}"), 1},
    {S("(B)12"), S("B"), 0},
    {S("B."), S("B"), 1},
    {S("$\\text{(D)}$"), S("D"), 1},
    /* strings */
    {S("Yes"), S("yes"), 1},
    {S("yes"), S("no"), 0},
    {S("\xc3\x89" "COLE"), S("\xc3\xa9" "cole"), 1},
    {S("e\xcc\x81"), S("\xc3\xa9"), 1},
    {S("\xe5\x8c\x97\xe4\xba\xac"), S("\xe5\x8c\x97\xe4\xba\xac"), 1},
    {S("\xe5\x8c\x97\xe4\xba\xac"), S("\xe4\xb8\x8a\xe6\xb5\xb7"), 0},
    {S("Stra\xc3\x9f" "e"), S("STRASSE"), 1},
    /* empty never matches */
    {S(""), S("5"), 0},
    {S("5"), S(""), 0},
    {S(""), S(""), 0},
    {S("   "), S(""), 0},
    {S("$ $"), S("$$"), 0},
    /* boxed inside the answer or the reference */
    {S("\\boxed{5}"), S("5"), 1},
    {S("The answer is \\boxed{\\frac{1}{2}}."), S("0.5"), 1},
    {S("5"), S("\\boxed{5}"), 1},
    {S("\\boxed{\\boxed{7}}"), S("7"), 1},
    {S("\\fbox{3}"), S("3"), 1},
    {S("\\boxed 9"), S("9"), 1},
    {S("\\boxed{1} or \\boxed{2}"), S("1"), 0},
    /* NUL bytes are control characters: whitespace to the rules */
    {S("4\0" "2"), S("42"), 1},
    {S("x\0"), S("x"), 1},
};

/* ---- aha_reward_extract_answer ---- */
typedef struct {
    const char *c;
    size_t cn;
    const char *ans; /* NULL: no answer */
} ex_case;

static const ex_case ex_cases[] = {
    {S("<think>x</think><answer>42</answer>"), "42"},
    {S("<answer>1</answer> then <answer>2</answer>"), "2"},
    {S("<answer>1</answer><answer>2"), "1"},
    {S("no tags \\boxed{7} and \\boxed{8}"), "8"},
    {S("\\boxed{\\frac{1}{2}}"), "\\frac{1}{2}"},
    {S("\\boxed{a{b}c}"), "a{b}c"},
    {S("\\boxed{5"), NULL},
    {S("\\boxed{5} \\boxed{6"), "5"},
    {S("\\boxed{\\{1,2\\}}"), "\\{1,2\\}"},
    {S("\\boxed{\\}}"), "\\}"},
    {S("\\boxed 5 is it"), "5"},
    {S("$\\boxed 5$"), "5"},
    {S("\\boxedx{5}"), NULL},
    {S(""), NULL},
    {S("plain text 5"), NULL},
    {S("<answer></answer>"), ""},
    {S("</answer><answer>"), NULL},
    {S("<answer>\\boxed{3}</answer>"), "\\boxed{3}"},
    {S("\\boxed{1} <answer>2</answer>"), "2"},
    {S("\\fbox{4}"), "4"},
    {S("\\boxed{\\boxed{7}}"), "7"},
    {S("\\boxed{x} }}} \\boxed{y}"), "y"},
    {S("\\boxed {5}"), "5"},
    {S("<answer>a</answer>\\boxed{b}"), "a"},
    {S("<answer>a\0b</answer>"), "a\0b"},
    {S("{{{\\boxed{z}"), "z"},
    {S("\\boxed{outer \\boxed{inner} tail}"), "inner"},
};

/* ---- aha_reward_format(prompt, completion) ---- */
typedef struct {
    const char *p;
    size_t pn;
    const char *c;
    size_t cn;
    int ok;
} fmt_case;

static const fmt_case fmt_cases[] = {
    {S(""), S("<think>a</think><answer>b</answer>"), 1},
    {S(""), S("<think>a</think>\n<answer>b</answer>"), 1},
    {S(""), S("  <think>a</think> <answer>b</answer>\n"), 1},
    {S(""), S("<think></think><answer></answer>"), 1},
    {S(""), S("<think>\n</think>\n\n<answer>\n42\n</answer>\n"), 1},
    {S(""), S("<think>a</think>\t\r\n<answer>b</answer> \t"), 1},
    {S(""), S("<think>a</think>x<answer>b</answer>"), 0},
    {S(""), S("<answer>b</answer><think>a</think>"), 0},
    {S(""), S("<answer>b</answer>\n<think>a</think>"), 0},
    {S(""), S("<think>a</think><answer>b</answer>extra"), 0},
    {S(""), S("pre<think>a</think><answer>b</answer>"), 0},
    {S(""), S("<think>a<think>b</think><answer>c</answer>"), 0},
    {S(""), S("<think>a</think><answer>b</answer><answer>c</answer>"), 0},
    {S(""), S("<think>a</think><answer>b</answer></think>"), 0},
    {S(""), S("<think>a</answer></think><answer>b</answer>"), 0},
    {S(""), S("<think>a</think>"), 0},
    {S(""), S("<answer>b</answer>"), 0},
    {S(""), S(""), 0},
    {S(""), S("<think>a</think><answer>b"), 0},
    {S(""), S("<THINK>a</THINK><answer>b</answer>"), 0},
    {S(""), S("<think>a</think><answer>b</answer>."), 0},
    {S(""), S("<think>a\0b</think><answer>c</answer>"), 1},
    {S(""), S("\0<think>a</think><answer>b</answer>"), 0},
    {S("Assistant: <think>"), S("a</think><answer>b</answer>"), 1},
    {S("Assistant: <think>\n"), S("a</think> <answer>b</answer>"), 1},
    {S("Assistant: <think>  \n "), S("reasoning</think><answer>5</answer>"), 1},
    {S("<think>"), S("</think><answer>5</answer>"), 1},
    {S("<think> "), S("  a</think><answer>b</answer>"), 1},
    {S("Assistant: <think>"), S("<think>a</think><answer>b</answer>"), 0},
    {S("Assistant: <think>"), S("a<answer>b</answer>"), 0},
    {S("x<think>y"), S("a</think><answer>b</answer>"), 0},
    {S("<think>a</think> then"), S("<think>a</think><answer>b</answer>"), 1},
};

/* ---- aha_reward_language: expected hit / all words (all 0: score 1) ---- */
typedef struct {
    const char *p;
    size_t pn;
    const char *c;
    size_t cn;
    const char *lang;
    int hit, all;
} lang_case;

static const lang_case lang_cases[] = {
    {S(""), S("<think>hello world</think><answer>5</answer>"), "en", 2, 2},
    {S(""), S("<think>\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c</think>"), "zh", 4, 4},
    /* 你好 world */
    {S(""), S("<think>\xe4\xbd\xa0\xe5\xa5\xbd world</think>"), "zh", 2, 3},
    {S(""), S("<think>\xe4\xbd\xa0\xe5\xa5\xbd world</think>"), "en", 1, 3},
    /* 我们 compute 答案 x */
    {S(""), S("<think>\xe6\x88\x91\xe4\xbb\xac compute \xe7\xad\x94\xe6\xa1\x88 x</think>"), "zh", 4, 6},
    /* $x^2 + y$ 所以 */
    {S(""), S("<think>$x^2 + y$ \xe6\x89\x80\xe4\xbb\xa5</think>"), "zh", 2, 2},
    /* \frac{1}{2} 是 答案 */
    {S(""), S("<think>\\frac{1}{2} \xe6\x98\xaf \xe7\xad\x94\xe6\xa1\x88</think>"), "zh", 3, 3},
    {S(""), S("<think>123 + 456 = 579</think>"), "en", 0, 0},
    {S(""), S("<think></think>"), "en", 0, 0},
    {S(""), S(""), "zh", 0, 0},
    /* Привет мир hello */
    {S(""), S("<think>\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80 hello</think>"), "ru", 2, 3},
    /* こんにちは世界 */
    {S(""), S("<think>\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf\xe4\xb8\x96\xe7\x95\x8c</think>"), "ja", 7, 7},
    {S(""), S("<think>\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf\xe4\xb8\x96\xe7\x95\x8c</think>"), "zh", 2, 7},
    /* カタカナ */
    {S(""), S("<think>\xe3\x82\xab\xe3\x82\xbf\xe3\x82\xab\xe3\x83\x8a</think>"), "ja", 4, 4},
    /* 안녕하세요 world */
    {S(""), S("<think>\xec\x95\x88\xeb\x85\x95\xed\x95\x98\xec\x84\xb8\xec\x9a\x94 world</think>"), "ko", 5, 6},
    /* Γειά σου κόσμε */
    {S(""), S("<think>\xce\x93\xce\xb5\xce\xb9\xce\xac \xcf\x83\xce\xbf\xcf\x85 \xce\xba\xcf\x8c\xcf\x83\xce\xbc\xce\xb5</think>"), "el", 3, 3},
    /* مرحبا بالعالم */
    {S(""), S("<think>\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 \xd8\xa8\xd8\xa7\xd9\x84\xd8\xb9\xd8\xa7\xd9\x84\xd9\x85</think>"), "ar", 2, 2},
    /* नमस्ते दुनिया: virama and vowel signs continue the word */
    {S(""), S("<think>\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87 \xe0\xa4\xa6\xe0\xa5\x81\xe0\xa4\xa8\xe0\xa4\xbf\xe0\xa4\xaf\xe0\xa4\xbe</think>"), "hi", 2, 2},
    /* สวัสดี hello */
    {S(""), S("<think>\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5 hello</think>"), "th", 1, 2},
    /* prompt opens the think part: 思考过程 */
    {S("Assistant: <think>"), S("\xe6\x80\x9d\xe8\x80\x83\xe8\xbf\x87\xe7\xa8\x8b</think><answer>5</answer>"), "zh", 4, 4},
    /* no think tag: the text before <answer> (答案 inside the answer is not counted) */
    {S(""), S("no think tags here <answer>\xe7\xad\x94\xe6\xa1\x88</answer>"), "en", 4, 4},
    /* unclosed think: up to the end; 思考 */
    {S(""), S("<think>unclosed \xe6\x80\x9d\xe8\x80\x83"), "en", 1, 3},
    {S(""), S("<think>don't</think>"), "en", 2, 2},
    {S(""), S("<think>Caf\xc3\xa9 na\xc3\xafve</think>"), "fr", 2, 2},
    {S(""), S("<think>Cafe\xcc\x81 ok</think>"), "fr", 2, 2},
    {S(""), S("<think>x1y2</think>"), "en", 2, 2},
    /* 这是 \(a+b\) 的 和 */
    {S(""), S("<think>\xe8\xbf\x99\xe6\x98\xaf \\(a+b\\) \xe7\x9a\x84 \xe5\x92\x8c</think>"), "zh", 4, 4},
    /* 如果 $$x = \text{foo}$$ 那么 */
    {S(""), S("<think>\xe5\xa6\x82\xe6\x9e\x9c $$x = \\text{foo}$$ \xe9\x82\xa3\xe4\xb9\x88</think>"), "zh", 4, 4},
    /* 価格は $5 です: a lone $ is punctuation */
    {S(""), S("<think>\xe4\xbe\xa1\xe6\xa0\xbc\xe3\x81\xaf $5 \xe3\x81\xa7\xe3\x81\x99</think>"), "ja", 5, 5},
    {S(""), S("<think>hello</think>"), "EN-us", 1, 1},
    {S(""), S("<think>hello</think>"), "zh-Hans", 0, 1},
    /* Hello мир */
    {S(""), S("<think>Hello \xd0\xbc\xd0\xb8\xd1\x80</think>"), "uk", 1, 2},
    /* ｆｕｌｌ (full-width Latin) */
    {S(""), S("<think>\xef\xbd\x86\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c</think>"), "en", 1, 1},
    /* 中文，English。 */
    {S(""), S("<think>\xe4\xb8\xad\xe6\x96\x87\xef\xbc\x8c" "English\xe3\x80\x82</think>"), "zh", 2, 3},
    /* 日本語とEnglish */
    {S(""), S("<think>\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xa8" "English</think>"), "ja", 4, 5},
    /* a chain of thought that switches language half way: 首先 we add 然后 相乘 */
    {S(""), S("<think>\xe9\xa6\x96\xe5\x85\x88 we add \xe7\x84\xb6\xe5\x90\x8e \xe7\x9b\xb8\xe4\xb9\x98</think><answer>6</answer>"), "zh", 6, 8},
    {S(""), S("<think>\xe9\xa6\x96\xe5\x85\x88 we add \xe7\x84\xb6\xe5\x90\x8e \xe7\x9b\xb8\xe4\xb9\x98</think><answer>6</answer>"), "en", 2, 8},
    /* only the think part counts: words after </think> are ignored */
    {S(""), S("<think>hello</think><answer>\xe4\xbd\xa0\xe5\xa5\xbd</answer> \xe4\xbd\xa0"), "en", 1, 1},
    {S(""), S("<think>a\0b</think>"), "en", 2, 2},
};

/* ---- aha_reward_score ---- */
typedef struct {
    const char *p;
    size_t pn;
    const char *c;
    size_t cn;
    const char *r;
    size_t rn;
    const char *lang;
    aha_reward_weights w;
    int status_ok;
    double total, acc, fmt, lang_score;
    int has_lang;
} score_case;

#define W(a, f, l) {a, f, l}

static const score_case score_cases[] = {
    {S(""), S("<think>2+2=4</think><answer>4</answer>"), S("4"), "", W(1, 1, 0), 1, 2, 1, 1, 0, 0},
    {S(""), S("<think>2+2=4</think><answer>4</answer>"), S("4"), "en", W(1, 1, 0.5), 1, 2.5, 1, 1, 1, 1},
    {S(""), S("<think>\xe8\xae\xa1\xe7\xae\x97</think> <answer>\\boxed{4}</answer>"), S("4"), "zh", W(1, 1, 1), 1, 3, 1, 1, 1, 1},
    {S(""), S("The answer is \\boxed{5}"), S("4"), "", W(1, 1, 0), 1, 0, 0, 0, 0, 0},
    {S(""), S("The answer is \\boxed{4}"), S("4"), "", W(1, 1, 0), 1, 1, 1, 0, 0, 0},
    {S(""), S("<think>a</think><answer>x</answer>"), S("4"), "", W(1, 1, 0), 1, 1, 0, 1, 0, 0},
    {S(""), S("\xff"), S("4"), "", W(1, 1, 0), 0, 0, 0, 0, 0, 0},
    {S(""), S("<think>a</think><answer>4</answer>"), S("4"), "xx", W(1, 1, 0), 0, 0, 0, 0, 0, 0},
    {S("Assistant: <think>"), S("thinking</think><answer>(B)</answer>"), S("B"), "", W(1, 1, 0), 1, 2, 1, 1, 0, 0},
    {S(""), S("<think>a\0b</think><answer>7</answer>"), S("7"), "", W(1, 1, 0), 1, 2, 1, 1, 0, 0},
    {S(""), S("<think>a</think><answer>7</answer>"), S("7\xc0"), "", W(1, 1, 0), 0, 0, 0, 0, 0, 0},
    /* I think 答案 is: 3 of 5 words English */
    {S(""), S("<think>I think \xe7\xad\x94\xe6\xa1\x88 is</think><answer>3</answer>"), S("3"), "en", W(1, 0, 1), 1, 1.6, 1, 1, 0.6, 1},
    {S(""), S("<think>a</think><answer>3</answer>"), S("3"), "", W(0.5, 0.25, 0), 1, 0.75, 1, 1, 0, 0},
    {S("\xc0\xaf"), S("<think>a</think><answer>3</answer>"), S("3"), "", W(1, 1, 0), 0, 0, 0, 0, 0, 0},
    {S(""), S("<think>\xed\xa0\x80</think><answer>3</answer>"), S("3"), "", W(1, 1, 0), 0, 0, 0, 0, 0, 0},
    {S(""), S("<think>a</think><answer>3</answer>\xf4\x90\x80\x80"), S("3"), "", W(1, 1, 0), 0, 0, 0, 0, 0, 0},
    {S(""), S(""), S(""), "", W(1, 1, 0), 1, 0, 0, 0, 0, 0},
    {S(""), S(""), S(""), "ja", W(1, 1, 1), 1, 1, 0, 0, 1, 1},
};

/* ---- aha_reward_weights_from_json ---- */
typedef struct {
    const char *json;
    int ok;
    aha_reward_weights want; /* starting from the defaults */
} json_case;

static const json_case json_cases[] = {
    {"", 1, W(1, 1, 0)},
    {"  \n", 1, W(1, 1, 0)},
    {"{}", 1, W(1, 1, 0)},
    {"{\"weights\":{\"language\":0.5}}", 1, W(1, 1, 0.5)},
    {"{\"weights\":{\"accuracy\":2,\"format\":0}}", 1, W(2, 0, 0)},
    {"{\"weights\":{}}", 1, W(1, 1, 0)},
    {"{\"weight\":{}}", 0, W(1, 1, 0)},
    {"{\"weights\":{\"acc\":1}}", 0, W(1, 1, 0)},
    {"{\"weights\":{\"format\":-1}}", 0, W(1, 1, 0)},
    {"{\"weights\":{\"format\":\"1\"}}", 0, W(1, 1, 0)},
    {"{\"weights\":{\"language\":0.5,\"format\":null}}", 0, W(1, 1, 0)},
    {"{\"weights\":[1,2]}", 0, W(1, 1, 0)},
    {"[1]", 0, W(1, 1, 0)},
    {"{bad", 0, W(1, 1, 0)},
    {"{\"weights\":{\"format\":1,\"format\":2}}", 0, W(1, 1, 0)},
};

/* ---- aha_reward_language_supported ---- */
typedef struct {
    const char *code;
    int ok;
} sup_case;

static const sup_case sup_cases[] = {
    {"en", 1}, {"zh-CN", 1}, {"ZH", 1}, {"ja_JP", 1}, {"ko", 1}, {"ru", 1}, {"hi", 1},
    {"th", 1}, {"xx", 0},    {"", 0},   {"e", 0},     {"en us", 0}, {"eng", 0}, {"english", 0},
};

static int run_eq(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(eq_cases); k++, n++) {
        const eq_case *c = &eq_cases[k];
        bool eq = !c->eq;
        aha_err err = {0};
        aha_status st = aha_reward_equivalent(c->a, c->an, c->r, c->rn, &eq, &err);
        CHECK(st == AHA_OK, "eq[%zu] '%s' vs '%s': %s", k, c->a, c->r, aha_err_msg(&err));
        CHECK(eq == (c->eq != 0), "eq[%zu] answer '%s' reference '%s': got %d want %d", k, c->a,
              c->r, eq, c->eq);
    }
    return n;
}

static int run_extract(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(ex_cases); k++, n++) {
        const ex_case *c = &ex_cases[k];
        size_t off = 0, len = 0;
        bool found = aha_reward_extract_answer(c->c, c->cn, &off, &len);
        if (!c->ans) {
            CHECK(!found, "extract[%zu] '%s': want none, got '%.*s'", k, c->c, (int)len,
                  c->c + off);
            continue;
        }
        /* expected answers with a NUL are written "a\0b": compare the full span */
        size_t want_len = strlen(c->ans);
        if (k == 24) want_len = 3;
        CHECK(found && len == want_len && off + len <= c->cn &&
                  memcmp(c->c + off, c->ans, want_len) == 0,
              "extract[%zu] '%s': want '%s', got %s'%.*s'", k, c->c, c->ans,
              found ? "" : "(none) ", (int)len, found ? c->c + off : "");
    }
    return n;
}

static int run_format(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(fmt_cases); k++, n++) {
        const fmt_case *c = &fmt_cases[k];
        double f = aha_reward_format(c->p, c->pn, c->c, c->cn);
        CHECK(f == (c->ok ? 1.0 : 0.0), "format[%zu] prompt '%s' completion '%s': got %g want %d",
              k, c->p, c->c, f, c->ok);
    }
    return n;
}

static int run_lang(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(lang_cases); k++, n++) {
        const lang_case *c = &lang_cases[k];
        double want = c->all ? (double)c->hit / c->all : 1.0;
        double got = -1;
        aha_err err = {0};
        aha_status st = aha_reward_language(c->p, c->pn, c->c, c->cn, c->lang, strlen(c->lang),
                                            &got, &err);
        CHECK(st == AHA_OK && fabs(got - want) < 1e-12,
              "language[%zu] %s '%s': got %g want %d/%d (%s)", k, c->lang, c->c, got, c->hit,
              c->all, aha_err_msg(&err));
    }
    /* unknown codes are errors naming the code */
    const char *bad[] = {"xx", "klingon", "e", "zh CN"};
    for (size_t k = 0; k < AHA_ARRAY_LEN(bad); k++, n++) {
        double got = 0.5;
        aha_err err = {0};
        aha_status st = aha_reward_language(NULL, 0, S("<think>hi</think>"), bad[k],
                                            strlen(bad[k]), &got, &err);
        CHECK(st == AHA_EINVAL && strstr(err.msg, "unknown language"), "language '%s': %s",
              bad[k], aha_err_msg(&err));
    }
    return n;
}

static int run_score(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(score_cases); k++, n++) {
        const score_case *c = &score_cases[k];
        aha_reward_item it = {.prompt = c->p, .prompt_len = c->pn, .completion = c->c,
                              .completion_len = c->cn, .reference = c->r, .reference_len = c->rn,
                              .language = c->lang, .language_len = strlen(c->lang),
                              .task = "math", .task_len = 4};
        aha_reward_result res;
        memset(&res, 0x5a, sizeof res);
        aha_status st = aha_reward_score(&it, &c->w, &res);
        if (c->status_ok) {
            CHECK(st == AHA_OK && res.error[0] == '\0', "score[%zu]: status %s error '%s'", k,
                  aha_status_name(st), res.error);
        } else {
            CHECK(st != AHA_OK && res.error[0] != '\0', "score[%zu]: want an item error", k);
        }
        CHECK(fabs(res.total - c->total) < 1e-12 && res.accuracy == c->acc &&
                  res.format == c->fmt && fabs(res.language - c->lang_score) < 1e-12 &&
                  res.has_language == (c->has_lang != 0),
              "score[%zu]: total %g acc %g fmt %g lang %g has %d; want %g %g %g %g %d", k,
              res.total, res.accuracy, res.format, res.language, res.has_language, c->total,
              c->acc, c->fmt, c->lang_score, c->has_lang);
    }
    /* error messages name the field */
    aha_reward_weights w = aha_reward_weights_default();
    aha_reward_item it = {.completion = S("ok"), .reference = S("\xe2\x82")};
    aha_reward_result res;
    aha_reward_score(&it, &w, &res);
    CHECK(strstr(res.error, "reference_answer") && strstr(res.error, "UTF-8"), "error '%s'",
          res.error);
    n++;
    /* the extracted answer is reported, cut at a UTF-8 boundary */
    char big[600];
    memcpy(big, "<answer>", 8);
    for (int k = 0; k < 150; k++) memcpy(big + 8 + 3 * k, "\xe4\xb8\x80", 3); /* 一 × 150 */
    memcpy(big + 8 + 450, "</answer>", 9);
    it = (aha_reward_item){.completion = big, .completion_len = 467, .reference = S("x")};
    CHECK(aha_reward_score(&it, &w, &res) == AHA_OK && res.has_answer &&
              strlen(res.extracted) == 255 && memcmp(res.extracted, "\xe4\xb8\x80", 3) == 0,
          "extracted length %zu", strlen(res.extracted));
    n++;
    return n;
}

static int run_json(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(json_cases); k++, n++) {
        const json_case *c = &json_cases[k];
        aha_reward_weights w = aha_reward_weights_default();
        aha_err err = {0};
        aha_status st = aha_reward_weights_from_json(c->json, strlen(c->json), &w, &err);
        CHECK((st == AHA_OK) == (c->ok != 0), "json[%zu] '%s': %s", k, c->json,
              aha_err_msg(&err));
        CHECK(w.accuracy == c->want.accuracy && w.format == c->want.format &&
                  w.language == c->want.language,
              "json[%zu] '%s': weights %g %g %g", k, c->json, w.accuracy, w.format, w.language);
        if (!c->ok) CHECK(err.msg[0] != '\0', "json[%zu]: no message", k);
    }
    /* the message names the unknown key */
    aha_reward_weights w = aha_reward_weights_default();
    aha_err err = {0};
    aha_reward_weights_from_json(S("{\"weights\":{\"lang\":1}}"), &w, &err);
    CHECK(strstr(err.msg, "'lang'") != NULL, "message '%s'", err.msg);
    n++;
    return n;
}

static int run_supported(void)
{
    int n = 0;
    for (size_t k = 0; k < AHA_ARRAY_LEN(sup_cases); k++, n++)
        CHECK(aha_reward_language_supported(sup_cases[k].code, strlen(sup_cases[k].code)) ==
                  (sup_cases[k].ok != 0),
              "supported('%s') want %d", sup_cases[k].code, sup_cases[k].ok);
    return n;
}

int main(void)
{
    int n = 0;
    n += run_eq();
    n += run_extract();
    n += run_format();
    n += run_lang();
    n += run_score();
    n += run_json();
    n += run_supported();
    fprintf(stderr, "%d table cases\n", n);
    CHECK(n >= 150, "only %d cases", n);
    return th_done("reward_rules");
}
