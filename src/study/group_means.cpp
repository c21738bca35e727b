// See group_means.hpp.
#include "study/group_means.hpp"

#include <cmath>
#include <map>

namespace nibble {

Json group_means(const std::vector<Json>& rows, const std::vector<std::string>& keys,
                 const std::vector<std::string>& fields) {
  struct Group {
    Json head = Json::object();  // the key values
    int64_t n = 0;
    std::vector<double> sum;
    std::vector<bool> finite;
  };
  std::vector<std::string> order;
  std::map<std::string, Group> groups;
  for (const Json& r : rows) {
    std::string id;
    for (const std::string& k : keys) id += r.at(k).dump() + "|";
    auto [it, fresh] = groups.try_emplace(id);
    Group& g = it->second;
    if (fresh) {
      order.push_back(id);
      for (const std::string& k : keys) g.head[k] = r.at(k);
      g.sum.assign(fields.size(), 0.0);
      g.finite.assign(fields.size(), true);
    }
    ++g.n;
    for (size_t f = 0; f < fields.size(); ++f) {
      const Json* v = r.find(fields[f]);
      if (!v || !v->is_number() || !std::isfinite(v->as_double())) g.finite[f] = false;
      else g.sum[f] += v->as_double();
    }
  }
  Json out = Json::array();
  for (const std::string& id : order) {
    const Group& g = groups.at(id);
    Json x = g.head;
    x["tensors"] = g.n;
    for (size_t f = 0; f < fields.size(); ++f)
      x[fields[f]] = g.finite[f] ? Json(g.sum[f] / static_cast<double>(g.n)) : Json();
    out.push_back(x);
  }
  return out;
}

}  // namespace nibble
