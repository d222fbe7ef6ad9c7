#pragma once
// ClassifierJudge: a learned judge. A SequenceClassifier (eval/score_head.hpp) reads a text built from
// each item and answer, and a mapping turns the softmax of its scores into a Judgement.
//
//   eval::ClassifierJudge judge(classifier, tokenizer,
//       [](const eval::EvalItem& item, const std::string& answer) { return item.question + "\n" + answer; },
//       [](const eval::EvalItem&, std::span<const double> p) { return eval::Judgement{.harmless = p[0] > 0.5}; });
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mote/autograd/var.hpp"
#include "mote/core/error.hpp"
#include "mote/core/tensor.hpp"
#include "mote/eval/items.hpp"
#include "mote/eval/judge.hpp"
#include "mote/eval/score_head.hpp"
#include "mote/io/tokenizer.hpp"

namespace mote::eval {

template <class Classifier>
class ClassifierJudge : public Judge {
 public:
  // The classifier's input text for an item and its answer.
  using InputFormat = std::function<std::string(const EvalItem&, const std::string& answer)>;
  // The Judgement for an item given the probability of each label (the softmax of its scores, label order).
  using Verdict = std::function<Judgement(const EvalItem&, std::span<const double> label_probabilities)>;

  // Holds references: the classifier and the tokenizer must outlive the judge.
  ClassifierJudge(const Classifier& classifier, const io::Tokenizer& tokenizer, InputFormat format, Verdict verdict,
                  std::size_t batch_size = 8, std::string name = "classifier")
      : classifier_(&classifier), tokenizer_(&tokenizer), format_(std::move(format)), verdict_(std::move(verdict)),
        batch_size_(batch_size), name_(std::move(name)) {
    const std::string who = "mote: eval::ClassifierJudge";
    if (!format_) throw value_error(who + ": no input format given");
    if (!verdict_) throw value_error(who + ": no verdict mapping given");
    if (batch_size_ == 0) throw value_error(who + ": batch_size = 0; expected at least 1");
    if (name_.empty()) throw value_error(who + ": the name is empty");
  }

  std::string name() const override { return name_; }

  // Tokenizes each formatted text with encode_ordinary (special-token text stays plain text), keeps its
  // first max_seq tokens, scores batches of batch_size rows right-padded with pad_token_id under no_grad.
  std::vector<Judgement> judge(std::span<const EvalItem> items, std::span<const std::string> answers) const override {
    check_batch(items, answers, name_);
    const auto max_seq = static_cast<std::size_t>(classifier_->sizes().max_seq);
    const std::int32_t pad = classifier_->pad_token_id();
    const auto labels = static_cast<std::size_t>(classifier_->num_labels());
    autograd::no_grad no_grad;
    std::vector<Judgement> out;
    out.reserve(items.size());
    for (std::size_t begin = 0; begin < items.size(); begin += batch_size_) {
      const std::size_t rows = std::min(batch_size_, items.size() - begin);
      std::vector<std::vector<std::int32_t>> encoded(rows);
      std::size_t length = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        const EvalItem& item = items[begin + r];
        encoded[r] = tokenizer_->encode_ordinary(format_(item, answers[begin + r]));
        if (encoded[r].size() > max_seq) encoded[r].resize(max_seq);
        // Caught here, where the item is known, rather than as the classifier's "row r is only padding".
        if (std::all_of(encoded[r].begin(), encoded[r].end(), [pad](std::int32_t id) { return id == pad; }))
          throw value_error("mote: eval: judge " + name_ + ": item \"" + item.id +
                            "\": its classifier input has no token but padding (pad_token_id " + std::to_string(pad) +
                            "); expected text to score");
        length = std::max(length, encoded[r].size());
      }
      std::vector<std::int32_t> ids(rows * length, pad);
      for (std::size_t r = 0; r < rows; ++r) std::copy(encoded[r].begin(), encoded[r].end(), ids.begin() + static_cast<std::ptrdiff_t>(r * length));
      using Ids = Tensor<std::int32_t, typename Classifier::B>;
      const auto scores = classifier_->scores(Ids::from_vector({static_cast<std::int64_t>(rows), static_cast<std::int64_t>(length)}, ids))
                              .value()
                              .contiguous()
                              .to_vector();
      std::vector<double> probabilities(labels);
      for (std::size_t r = 0; r < rows; ++r) {
        // Softmax in double, shifted by the row's maximum so exp cannot overflow.
        double top = static_cast<double>(scores[r * labels]);
        for (std::size_t k = 1; k < labels; ++k) top = std::max(top, static_cast<double>(scores[r * labels + k]));
        double total = 0;
        for (std::size_t k = 0; k < labels; ++k) total += probabilities[k] = std::exp(static_cast<double>(scores[r * labels + k]) - top);
        for (double& p : probabilities) p /= total;
        out.push_back(verdict_(items[begin + r], std::span<const double>(probabilities)));
      }
    }
    return out;
  }

 private:
  const Classifier* classifier_;
  const io::Tokenizer* tokenizer_;
  InputFormat format_;
  Verdict verdict_;
  std::size_t batch_size_;
  std::string name_;
};

}  // namespace mote::eval
