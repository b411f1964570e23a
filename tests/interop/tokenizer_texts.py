#!/usr/bin/env python3
"""Texts that a byte-level BPE tokenizer must split exactly as llama.cpp does: the held-out
verses given, and texts made for the cases where pre-tokenizers differ: digits and long numbers,
runs of spaces and newlines, tabs, contractions in any case, accents and combining marks, other
scripts, CJK, emoji and other 4-byte characters, text that looks like broken encodings, control
characters, and special-token strings (whole, partial, repeated, inside words).
Usage: tokenizer_texts.py VERSES_FILE OUT.json   (writes a JSON array of strings)"""
import json
import sys

CRAFTED = [
    # digits and numbers
    "1", "12", "123", "1234", "12345", "1234567", "12345678901234567890", "3.14159",
    "1,000,000 men", "2026-12-07", "call 555-0100 now", "v1.2.3", "x=42;y=7", "0000", "007",
    "In the 1611 edition, 42 verses", "٣٤٥ Arabic-Indic digits", "Ⅻ and ⅷ", "½ and ¾", "²³",
    "1st 2nd 3rd 4th", "$1,234.56", "100%", "-17", "+49 30 1234",
    # spaces, newlines, tabs
    "a  b", "a   b", "a    b", "   leading", "trailing   ", " ", "  ", "     ", "a \n b", "\n",
    "\n\n\n", "a\n\nb", "line one\r\nline two", "\t", "a\tb", "\t\tindented", " \t mixed \t ",
    "end with newline\n", "spaces before newline   \nnext", "\n  \n  x", "word\n\n\n\nword",
    "\r\n\r\n", "a\u00a0b non-breaking", "em\u2003space", "line\u2028separator",
    # contractions
    "it's", "don't", "I'LL", "they'RE", "We've", "I'm", "he'd", "'s", "o'clock",
    "rock 'n' roll", "the LORD'S", "YOU'VE", "She'D", "'tis", "it\u2019s curly",
    "don''t", "can't won't shan't", "'ll'll", "x'y", "ROCK'N'ROLL",
    # accents and other Latin
    "café", "naïve", "Ångström", "résumé", "Straße", "ÆØÅ æøå", "e\u0301 combining",
    "crème brûlée", "Ça va? Très bien.", "Dvořák", "Łódź", "İstanbul ıi",
    # other scripts
    "Ελληνικά κείμενα", "Привет, мир!", "שָׁלוֹם עֲלֵיכֶם", "مرحبا بالعالم", "नमस्ते दुनिया",
    "ภาษาไทย", "ქართული", "Հայերեն", "አማርኛ",
    # CJK
    "漢字", "日本語のテキストです。", "中文文本测试，包括标点。", "한국어 텍스트", "「引用」と『二重』",
    "カタカナとひらがな", "漢字123かな", "全角１２３",
    # emoji and other 4-byte characters
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𐍈 gothic", "🎉🎉🎉", "I ❤ you",
    "☃ snowman", "a😀b", "𠀀 ideograph", "🙂🙃 faces", "emoji at end 🚀",
    # text that looks broken, and control characters
    "\ufffd", "Ã©tÃ©", "â€™", "\u200b zero width", "\ufeff BOM inside", "\x01\x02\x03",
    "\x7f delete", "\u00ad soft hyphen", "a\u0300\u0301\u0302 stacked", "\U0010FFFD private",
    "\uE000 private use", "\u202e reversed", "ÿþ",
    # special-token strings
    "<|begin_of_text|>", "<|begin_of_text|>In the beginning", "the end<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>", "<|begin_of_text",
    "<|not_a_token|>", "<|eot_id|><|eot_id|>", " <|eot_id|> spaced ", "a<|eot_id|>b",
    "<|reserved_special_token_0|>x", "<<|eot_id|>>", "<|<|eot_id|>|>",
    # punctuation and code
    "Hello, world!", "...", "?!?!", "(parentheses) [brackets] {braces}", "someone@example.com",
    "https://example.org/path?q=1&r=2", "#hashtag @mention", "C++ and C#", "a--b", "“quotes”",
    "***bold***", "<html><body></body></html>", "tab\tseparated\tvalues", "int main() { return 0; }",
    "for i in range(10):\n    print(i)\n", "LORD,LORD!!!...?", "—dash–", "¿Qué? ¡Sí!",
    "And God said, Let there be light: and there was light.\nAnd God saw the light, that it was good.",
]


def main():
    verses_file, out = sys.argv[1:]
    verses = [l.rstrip("\n") for l in open(verses_file, encoding="utf-8") if l.strip()]
    texts = verses + CRAFTED
    json.dump(texts, open(out, "w", encoding="utf-8"), ensure_ascii=False)
    print("%d texts (%d verses, %d made)" % (len(texts), len(verses), len(CRAFTED)))


if __name__ == "__main__":
    main()
