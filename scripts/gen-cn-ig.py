#!/usr/bin/env python3
"""Generates the local implementation guide under profiles/cn/ (conformance resources and examples).

The tables below are the single source of truth; every fact comes from
../shared/reference/cn-interop.md or from the WS/T 500 / WS/T 846 samples in the cn-hie corpus (named
where used). Facts the reference marks unverified ([U]) make their resource `experimental: true` and
are listed in profiles/cn/README.md. Run: python3 scripts/gen-cn-ig.py (idempotent; rewrites the folder).
"""
import json, os, shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "profiles", "cn")
BASE = "http://huitong.dev/fhir/cn"
DATE = "2026-12-01"
OID = "2.16.156.10011."
ID_NATIONAL = "urn:oid:2.16.156.10011.1.3"
ID_HL7CN = "urn:oid:2.16.840.1.113883.2.23.1.19.1"

def cs_url(i): return f"{BASE}/CodeSystem/{i}"
def vs_url(i): return f"{BASE}/ValueSet/{i}"
def sd_url(i): return f"{BASE}/StructureDefinition/{i}"
def sid(i): return f"{BASE}/sid/{i}"

written = []
# Generated folders are rewritten whole, so a renamed resource leaves no stale file behind.
for folder in ["namingsystems", "codesystems", "valuesets", "conceptmaps", "extensions", "profiles", "examples"]:
    shutil.rmtree(os.path.join(ROOT, folder), ignore_errors=True)

def write(folder, name, res):
    d = os.path.join(ROOT, folder)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=False, indent=2)
        f.write("\n")
    written.append((folder, res))

# ---------------------------------------------------------------- NamingSystems
# (id, name, title, kind-of-number, [(type, value, preferred)], source, experimental, note)
NAMING = [
    ("resident-id", "CNResidentIdentityCard", "居民身份证号 (公民身份号码, GB 11643)",
     [("uri", ID_NATIONAL, True), ("oid", OID + "1.3", False), ("uri", ID_HL7CN, False), ("oid", "2.16.840.1.113883.2.23.1.19.1", False)],
     "WS/T 500 CDA and WS/T 846 v3 (2.16.156.10011.1.3); HL7 China FHIR connectathon guide (2.16.840.1.113883.2.23.1.19.1)", False,
     "Both OIDs name the same number; the canonicaliser stores the preferred one (configurable)."),
    ("social-security-card", "CNSocialSecurityCard", "社保卡号 / 医保卡号",
     [("uri", "urn:oid:" + OID + "1.15", True), ("oid", OID + "1.15", False), ("uri", "urn:oid:2.16.840.1.113883.2.23.1.19.2", False), ("oid", "2.16.840.1.113883.2.23.1.19.2", False)],
     "2.16.156.10011.1.15 医保卡号 (CDA/v3); HL7 China guide 社保卡 2.16.840.1.113883.2.23.1.19.2", True,
     "That the HL7 China 社保卡 OID and the WS 医保卡号 OID name one number is our reading (the issue groups them); unverified."),
    ("resident-health-card", "CNResidentHealthCard", "居民健康卡号",
     [("uri", "urn:oid:" + OID + "1.19", True), ("oid", OID + "1.19", False)], "CDA/v3 identifier OID 2.16.156.10011.1.19", False, None),
    ("ehealth-card", "CNElectronicHealthCard", "电子健康卡 ID (64 hex digits, ehealth_card_id)",
     [("uri", sid("ehealth-card"), True)], "电子健康卡 specification (ehealth_card_id); no OID in the reference", True,
     "No national OID or URI is known to us: the system URI is this guide's own."),
    ("nhsa-ecert", "CNMedicalInsuranceECertificate", "医保电子凭证",
     [("uri", sid("nhsa-ecert"), True)], "国家医保信息平台 mdtrt_cert_type 01 电子凭证; no OID in the reference", True,
     "No national OID or URI is known to us: the system URI is this guide's own."),
    ("medical-record-no", "CNMedicalRecordNumber", "病案号",
     [("uri", "urn:oid:" + OID + "1.13", True), ("oid", OID + "1.13", False)], "CDA/v3: 1.8 or 1.13 (implementations differ)", True,
     "Implementations use 1.8 or 1.13 for 病案号 and the other for pathology numbers, so 1.8 is deliberately not an alias."),
    ("outpatient-no", "CNOutpatientNumber", "门(急)诊号",
     [("uri", "urn:oid:" + OID + "1.11", True), ("oid", OID + "1.11", False)], "CDA/v3: 1.10 or 1.11 (implementations differ)", True,
     "Implementations use 1.10 or 1.11; 1.10 is not an alias because its meaning differs between implementations."),
    ("inpatient-no", "CNInpatientNumber", "住院号",
     [("uri", "urn:oid:" + OID + "1.12", True), ("oid", OID + "1.12", False)], "CDA/v3 identifier OID 2.16.156.10011.1.12", False, None),
    ("visit-serial-no", "CNVisitSerialNumber", "就诊流水号",
     [("uri", "urn:oid:" + OID + "2.5.1.9", True), ("oid", OID + "2.5.1.9", False)], "WS/T 846 message ids 2.16.156.10011.2.5.1.9", False, None),
    ("lab-report-no", "CNLabReportNumber", "检验报告单号",
     [("uri", "urn:oid:" + OID + "1.33", True), ("oid", OID + "1.33", False)], "CDA/v3 1.32/1.33 exam/lab report no.", False, None),
    ("exam-report-no", "CNExamReportNumber", "检查报告单号",
     [("uri", "urn:oid:" + OID + "1.32", True), ("oid", OID + "1.32", False)], "CDA/v3 1.32/1.33 exam/lab report no.", False, None),
    ("prescription-no", "CNPrescriptionNumber", "处方号",
     [("uri", "urn:oid:" + OID + "1.20", True), ("oid", OID + "1.20", False)], "CDA/v3 identifier OID 2.16.156.10011.1.20", False, None),
    ("order-no", "CNOrderNumber", "医嘱号",
     [("uri", "urn:oid:" + OID + "1.28", True), ("oid", OID + "1.28", False)], "CDA/v3 identifier OID 2.16.156.10011.1.28", False, None),
    ("document-serial-no", "CNDocumentSerialNumber", "文档流水号",
     [("uri", "urn:oid:" + OID + "1.1", True), ("oid", OID + "1.1", False)], "CDA/v3 identifier OID 2.16.156.10011.1.1", False, None),
    ("uscc", "CNUnifiedSocialCreditCode", "统一社会信用代码",
     [("uri", sid("uscc"), True)], "GB 32100 (not in the reference); no OID in the reference", True,
     "No OID or URI in the reference: the system URI is this guide's own; the check-character rule is not checked (its algorithm is not in the reference)."),
    ("institution-registration-no", "CNMedicalInstitutionRegistrationNumber", "医疗机构登记号 (执业许可证登记号)",
     [("uri", sid("institution-registration-no"), True)], "医疗机构执业许可证; no OID in the reference (1.5 names institutions generally)", True,
     "No OID in the reference: the system URI is this guide's own."),
    ("physician-license-no", "CNPhysicianLicenseNumber", "医师执业证书编号",
     [("uri", sid("physician-license-no"), True)], "医师执业证书; no OID in the reference (1.4 is a staff number)", True,
     "No OID in the reference: the system URI is this guide's own."),
    ("nhsa-setl-id", "CNNhsaSettlementId", "医保结算 ID (setl_id)",
     [("uri", sid("nhsa-setl-id"), True)], "国家医保信息平台 2207/2304 setl_id", True, "The system URI is this guide's own."),
    ("birth-certificate-no", "CNBirthCertificateNumber", "出生医学证明编号",
     [("uri", sid("birth-certificate-no"), True)], "WS/T 483.2 出生医学证明 [V/U]; no OID in the reference", True,
     "The system URI is this guide's own; the number's format (one letter and nine digits, as the birth-certificate feed checks it) is unverified."),
    ("vaccine-trace-code", "CNVaccineTraceCode", "疫苗追溯码",
     [("uri", sid("vaccine-trace-code"), True)], "预防接种记录 追溯码 [U]", True, "The record's fields are unverified; the system URI is this guide's own."),
]
NS = {}
for (i, name, title, uids, source, exp, note) in NAMING:
    res = {"resourceType": "NamingSystem", "id": "cn-" + i, "name": name, "status": "draft", "kind": "identifier",
           "date": DATE, "publisher": "Huitong", "responsible": source, "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "CN"}]}],
           "description": title + (". " + note if note else ""),
           "uniqueId": [dict({"type": t, "value": v}, **({"preferred": True} if p else {})) for (t, v, p) in uids]}
    if exp:
        # R4 NamingSystem has no `experimental`; the R5 element travels as its cross-version extension.
        res["extension"] = [{"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-NamingSystem.experimental", "valueBoolean": True}]
        res["description"] += " (experimental)"
    NS[i] = uids[0][1]
    write("namingsystems", "NamingSystem-cn-" + i, res)

# ---------------------------------------------------------------- CodeSystems
# (id, title, oid, content, experimental, source, concepts [(code, display[, children])], note)
def C(code, display, *children): return (code, display, list(children))
CODESYSTEMS = [
    ("gbt-2261-1-sex", "生理性别代码 (GB/T 2261.1-2003)", "2.3.3.4", "complete", False, "GB/T 2261.1-2003",
     [C("0", "未知的性别"), C("1", "男性"), C("2", "女性"), C("5", "女性改(变)为男性"), C("6", "男性改(变)为女性"), C("9", "未说明的性别")], None),
    ("gbt-2261-2-marital", "婚姻状况代码 (GB/T 2261.2-2003)", "2.3.3.5", "complete", True, "GB/T 2261.2-2003",
     [C("10", "未婚"), C("20", "已婚", C("21", "初婚"), C("22", "再婚"), C("23", "复婚")), C("30", "丧偶"), C("40", "离婚"), C("90", "未说明的婚姻状况")],
     "Only 20 (and 10, in the WS/T 500 samples) are verified; the rest are as widely reported."),
    ("gb-3304-ethnicity", "民族类别 数字代码 (GB 3304-1991)", "2.3.3.3", "fragment", False, "GB 3304-1991",
     [C("01", "汉族")], "The reference gives only 01 汉族 and the range 01-56; the other codes are not shipped, the format is checked by the profiles."),
    ("gb-3304-ethnicity-letter", "民族类别 字母代码 (GB 3304-1991, used by the HL7 China guide)", None, "fragment", False, "GB 3304-1991 letter codes",
     [C("HA", "汉族")], "The reference gives only HA = 汉族."),
    ("cv02-01-101-id-document-type", "身份证件类别代码 (CV02.01.101)", "2.3.1.1", "complete", False, "WS 364 CV02.01.101",
     [C("01", "居民身份证"), C("02", "居民户口簿"), C("03", "护照"), C("04", "军官证"), C("05", "驾驶证"), C("06", "港澳居民来往内地通行证"), C("07", "台湾居民来往内地通行证"), C("99", "其他法定有效证件")], None),
    ("cv02-01-102-birth-place-type", "出生地点类别代码 (CV02.01.102)", None, "complete", False, "WS 364 CV02.01.102",
     [C("1", "医院"), C("2", "妇幼保健院"), C("3", "家庭"), C("9", "其他")], "The reference gives no OID."),
    ("cv04-50-005-abo", "ABO 血型代码 (CV04.50.005)", "2.3.1.85", "complete", True, "WS 364 CV04.50.005",
     [C("1", "A型"), C("2", "B型"), C("3", "O型"), C("4", "AB型"), C("5", "不详")], "Codes 1-4 unverified in the reference (1 A型 is in the WS/T 500 samples)."),
    ("cv04-50-020-rh", "Rh(D) 血型代码 (CV04.50.020)", "2.3.1.250", "complete", True, "WS 364 CV04.50.020 (table id unverified)",
     [C("1", "阴性"), C("2", "阳性"), C("3", "不详")], "The table id and codes 1/3 are unverified in the reference (1 阴性 and 2 阳性 are in the WS/T 500 samples)."),
    ("gbt-2260-admin-division", "中华人民共和国行政区划代码 (GB/T 2260)", None, "not-present", False, "GB/T 2260", [],
     "6-digit codes (townships 9 digits); the table is not in the reference and is not shipped."),
    ("gbt-6565-occupation", "职业分类与代码 (GB/T 6565)", "2.3.3.7", "not-present", False, "GB/T 6565", [],
     "Large; not in the reference and not shipped."),
    ("disease-report-occupation", "传染病报告卡 人群分类 (职业)", None, "complete", True, "传染病报告卡",
     [C(x, x) for x in ["幼托儿童", "散居儿童", "学生", "教师", "保育员及保姆", "餐饮食品业", "商业服务", "医务人员", "工人", "民工", "农民", "牧民", "渔(船)民", "干部职员", "离退人员", "家务及待业", "其他", "不详"]],
     "The reference lists the card's categories without codes; the code is the category's name."),
    ("medical-payment-method", "医疗付费方式代码", "2.3.1.269", "fragment", False, "WS 364 (CV07.10.005)",
     [C("01", "城镇职工基本医疗保险")], "Only the code seen in the WS/T 500 sample C0032 is shipped."),
    ("admission-route", "入院途径代码", "2.3.1.270", "fragment", False, "WS 364",
     [C("1", "门诊")], "Only 1 门诊 (WS/T 500 samples C0032/C0034) is shipped; one sample also writes 01 急诊, which conflicts and is left out."),
    ("discharge-method", "离院方式代码", "2.3.1.265", "fragment", False, "WS 364",
     [C("1", "医嘱离院")], "Only 1 医嘱离院 (WS/T 500 sample C0032) is shipped."),
    ("patient-type", "患者类型代码", "2.3.1.271", "fragment", False, "WS 364",
     [C("1", "门诊")], "Only 1 门诊 (WS/T 500 samples) is shipped; one sample writes 01."),
    ("nhsa-insutype", "医保险种 (insutype)", None, "fragment", False, "国家医保信息平台 字典 insutype",
     [C("310", "职工基本医疗保险"), C("390", "城乡居民基本医疗保险"), C("392", "城乡居民大病医疗保险"), C("330", "大额医疗费用补助"), C("340", "离休人员医疗保障")],
     "The reference lists these five and more ('...')."),
    ("nhsa-mdtrt-cert-type", "就诊凭证类型 (mdtrt_cert_type)", None, "fragment", False, "国家医保信息平台",
     [C("01", "医保电子凭证"), C("02", "居民身份证"), C("03", "社会保障卡")], None),
    ("infectious-disease", "法定传染病病种 (传染病报告卡)", None, "fragment", False, "传染病报告卡 疾病名称",
     [C("甲类", "甲类传染病", C("0100", "鼠疫"), C("0200", "霍乱")),
      C("乙类", "乙类传染病", C("0300", "病毒性肝炎"), C("0600", "艾滋病"), C("0800", "梅毒"), C("2600", "肺结核")),
      C("丙类", "丙类传染病", C("3500", "流行性感冒"), C("4000", "手足口病"))],
     "The reference gives these diseases as examples of each class; subtypes and the other diseases are not shipped. The class concepts use the class names as codes."),
    ("report-card-type", "报卡类别", None, "complete", True, "传染病报告卡", [C("初次报告", "初次报告"), C("订正报告", "订正报告")],
     "The reference names the card types without codes; the code is the name."),
    ("case-classification", "病例分类", None, "complete", True, "传染病报告卡",
     [C("临床诊断病例", "临床诊断病例"), C("确诊病例", "确诊病例"), C("疑似病例", "疑似病例"), C("病原携带者", "病原携带者")],
     "The reference names the classes without codes; the code is the name. 急性/慢性 (for some diseases) is not a value here."),
    ("patient-locality", "病人属于", None, "complete", True, "传染病报告卡",
     [C(x, x) for x in ["本县区", "本市其他县区", "本省其他地市", "外省", "港澳台", "外籍"]], "The reference names the values without codes; the code is the name."),
    ("address-use", "地址类别 (户籍地址 / 现住址)", None, "complete", False, "this guide",
     [C("household-registration", "户籍地址"), C("current-residence", "现住址")], "Codes of this guide."),
    ("wst-500-document-type", "卫生信息共享文档规范编码体系 (WS/T 500-2016)", "2.4", "complete", False, "WS/T 500-2016",
     [C("C%04d" % (n + 1), t) for n, t in enumerate("病历概要 门(急)诊病历 急诊留观病历 西药处方 中药处方 检查记录 检验记录 治疗记录 一般手术记录 麻醉术前访视记录 麻醉记录 麻醉术后访视记录 输血记录 待产记录 阴道分娩记录 剖宫产记录 一般护理记录 病重(病危)护理记录 手术护理记录 生命体征测量记录 出入量记录 高值耗材使用记录 入院评估 护理计划 出院评估与指导 手术知情同意书 麻醉知情同意书 输血治疗同意书 特殊检查及特殊治疗同意书 病危(重)通知书 其他知情同意书 住院病案首页 中医住院病案首页 入院记录 24h内入出院记录 24h内入院死亡记录 首次病程记录 日常病程记录 上级医师查房记录 疑难病例讨论记录 交接班记录 转科记录 阶段小结 抢救记录 会诊记录 术前小结 术前讨论 术后首次病程记录 出院记录 死亡记录 死亡病例讨论记录 住院医嘱 出院小结".split())],
     None),
    ("wst-846-interaction", "医院信息平台交互服务 (WS/T 846-2024 interaction ids)", None, "fragment", False, "WS/T 846-2024",
     [C("PRPA_IN201311UV02", "个人信息注册"), C("PRPA_IN201314UV02", "个人信息更新"), C("PRPA_IN201305UV02", "个人信息查询"), C("PRPA_IN201306UV02", "个人信息查询响应"),
      C("PRPM_IN401030UV01", "医疗卫生机构(科室)信息注册"), C("PRPM_IN403010UV01", "医疗卫生机构(科室)信息更新"), C("PRPM_IN406010UV01", "医疗卫生机构(科室)信息查询"),
      C("PRPM_IN301010UV01", "医疗卫生人员信息注册"), C("PRPM_IN303010UV01", "医疗卫生人员信息更新"),
      C("PRVS_IN000001UV01", "术语注册"), C("PRVS_IN000002UV01", "术语更新"), C("PRVS_IN000003UV01", "术语查询"),
      C("RCMR_IN000002UV02", "电子病历文档注册"), C("RCMR_IN000029UV01", "电子病历文档检索"), C("RCMR_IN000031UV01", "电子病历文档调阅"),
      C("PRPA_IN400001UV", "门诊挂号"), C("PRPA_IN400002UV", "门诊挂号更新"), C("PRPA_IN900300UV", "门诊挂号查询"),
      C("PRPA_IN302011UV", "转科"), C("PRPA_IN302012UV", "转科更新"), C("PRPA_IN400003UV01", "出院登记"),
      C("POOR_IN200901UV", "医嘱新增"), C("POOR_IN200902UV", "医嘱更新"), C("QUMT_IN020030UV01", "医嘱查询"),
      C("MCCI_IN000002UV01", "应答")],
     "Interaction ids seen in a hospital implementation; merge and parts 10/11 are unverified and not shipped. Displays are this guide's short names."),
    ("icd10-cn-clinical", "疾病分类与代码 国家临床版 2.0 (ICD-10)", "2.3.3.11", "not-present", True, "ICD-10 国家临床版 2.0", [],
     "Not shipped. The reference gives one OID (2.3.3.11) for diagnosis codes; that it names the clinical version is unverified."),
    ("icd10-nhsa", "医疗保障疾病诊断分类与代码 医保版 2.0 (ICD-10)", None, "not-present", False, "ICD-10 医保版 2.0", [], "Not shipped."),
    ("nhsa-settlement-amount", "医保结算金额类别 (4101/2207 settlement fields)", None, "complete", False, "国家医保信息平台 结算信息",
     [C(c, d) for c, d in [("medfee_sumamt", "医疗费总额"), ("fulamt_ownpay_amt", "全自费金额"), ("overlmt_selfpay", "超限价自费费用"), ("preselfpay_amt", "先行自付金额"),
      ("inscp_scp_amt", "符合政策范围金额"), ("hifp_pay", "基本医疗保险统筹基金支出"), ("cvlserv_pay", "公务员医疗补助资金支出"), ("hifes_pay", "企业补充医疗保险基金支出"),
      ("hifmi_pay", "居民大病保险资金支出"), ("hifob_pay", "职工大额医疗费用补助基金支出"), ("maf_pay", "医疗救助基金支出"), ("oth_pay", "其他支出"),
      ("fund_pay_sumamt", "基金支付总额"), ("psn_part_amt", "个人负担总金额"), ("acct_pay", "个人账户支出"), ("psn_cash_pay", "个人现金支出"),
      ("hosp_part_amt", "医院负担金额"), ("balc", "余额"), ("acct_mulaid_pay", "个人账户共济支付金额")]],
     "Codes are the settlement field names."),
]
CS = {}
for (i, title, oid, content, exp, source, concepts, note) in CODESYSTEMS:
    def conv(cs):
        out = []
        for code, disp, kids in cs:
            c = {"code": code, "display": disp}
            if kids: c["concept"] = conv(kids)
            out.append(c)
        return out
    def count(cs): return sum(1 + count(k) for _, _, k in cs)
    res = {"resourceType": "CodeSystem", "id": "cn-" + i, "url": cs_url(i), "version": "0.1.0", "name": "CN" + "".join(p.capitalize() for p in i.replace(".", "-").split("-")),
           "title": title, "status": "draft", "experimental": exp, "date": DATE, "publisher": "Huitong",
           "description": f"{title}. Source: {source}." + (f" {note}" if note else ""), "caseSensitive": True,
           "valueSet": vs_url(i), "content": content}
    if oid:
        res["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:" + OID + oid}]
    if content != "not-present":
        res["count"] = count(concepts)
        res["concept"] = conv(concepts)
    if i == "infectious-disease":
        res["hierarchyMeaning"] = "classified-with"
    CS[i] = res
    write("codesystems", "CodeSystem-cn-" + i, res)
    vs = {"resourceType": "ValueSet", "id": "cn-" + i, "url": vs_url(i), "version": "0.1.0", "name": res["name"] + "VS", "title": title,
          "status": "draft", "experimental": exp, "date": DATE, "publisher": "Huitong", "description": f"All codes of {cs_url(i)}.",
          "compose": {"include": [{"system": cs_url(i)}]}}
    write("valuesets", "ValueSet-cn-" + i, vs)

def extra_vs(i, title, include, desc):
    write("valuesets", "ValueSet-cn-" + i, {"resourceType": "ValueSet", "id": "cn-" + i, "url": vs_url(i), "version": "0.1.0", "name": "CN" + i.replace("-", ""),
        "title": title, "status": "draft", "date": DATE, "publisher": "Huitong", "description": desc, "compose": {"include": include}})
extra_vs("gb-3304-ethnicity-any", "民族 (数字或字母代码)", [{"system": cs_url("gb-3304-ethnicity")}, {"system": cs_url("gb-3304-ethnicity-letter")}], "GB 3304 numeric or letter codes.")
extra_vs("diagnosis", "诊断 (ICD-10 国家临床版 2.0 或 医保版 2.0)", [{"system": cs_url("icd10-cn-clinical")}, {"system": cs_url("icd10-nhsa")}], "Either ICD-10 version.")
extra_vs("encounter-class", "就诊类别 (门诊/住院/急诊)", [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "concept": [
    {"code": "AMB", "display": "门诊 (ambulatory)"}, {"code": "IMP", "display": "住院 (inpatient encounter)"}, {"code": "EMER", "display": "急诊 (emergency)"}]}], "门诊 AMB, 住院 IMP, 急诊 EMER.")

# ---------------------------------------------------------------- ConceptMaps
V3ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
CONCEPTMAPS = [
    ("sex-to-administrative-gender", "GB/T 2261.1 生理性别 → administrative-gender", "gbt-2261-1-sex", "http://hl7.org/fhir/ValueSet/administrative-gender", False,
     [("http://hl7.org/fhir/administrative-gender", [("0", "unknown", "equivalent"), ("1", "male", "equivalent"), ("2", "female", "equivalent"),
      ("5", "other", "wider"), ("6", "other", "wider"), ("9", "unknown", "wider")])],
     "Keep the original code (extension cn-original-sex): 5 and 6 do not survive the mapping."),
    ("marital-to-v3", "GB/T 2261.2 婚姻状况 → v3 MaritalStatus", "gbt-2261-2-marital", "http://hl7.org/fhir/ValueSet/marital-status", True,
     [("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", [("10", "S", "equivalent"), ("20", "M", "equivalent"), ("21", "M", "wider"), ("22", "M", "wider"),
      ("23", "M", "wider"), ("30", "W", "equivalent"), ("40", "D", "equivalent")]),
      ("http://terminology.hl7.org/CodeSystem/v3-NullFlavor", [("90", "UNK", "equivalent")])], None),
    ("id-document-type-to-v2-0203", "CV02.01.101 身份证件类别 → v2-0203 identifier type", "cv02-01-101-id-document-type", "http://hl7.org/fhir/ValueSet/identifier-type", False,
     [("http://terminology.hl7.org/CodeSystem/v2-0203", [("01", "NI", "equivalent"), ("03", "PPN", "equivalent"), ("04", "MI", "equivalent"), ("05", "DL", "equivalent"),
      ("02", None, "unmatched"), ("06", None, "unmatched"), ("07", None, "unmatched"), ("99", None, "unmatched")])],
     "02 户口簿 and the 06/07 travel permits have no v2-0203 code."),
    ("abo-to-loinc", "CV04.50.005 ABO 血型 → LOINC answers (883-9)", "cv04-50-005-abo", None, True,
     [(LOINC, [("1", "LA19710-5", "equivalent"), ("2", "LA19709-7", "equivalent"), ("3", "LA19708-9", "equivalent"), ("4", "LA28449-9", "equivalent"), ("5", None, "unmatched")])],
     "LOINC answer codes of list LL2419-1 (Group A/B/O/AB); 5 不详 has none."),
    ("rh-to-loinc", "CV04.50.020 Rh(D) 血型 → LOINC answers (10331-7)", "cv04-50-020-rh", None, True,
     [(LOINC, [("1", "LA6577-6", "equivalent"), ("2", "LA6576-8", "equivalent"), ("3", None, "unmatched")])], "LOINC Negative/Positive answers; 3 不详 has none."),
    ("payment-method-to-coverage-type", "医疗付费方式 → Coverage.type", "medical-payment-method", "http://hl7.org/fhir/ValueSet/coverage-type", False,
     [(V3ACT, [("01", "PUBLICPOL", "wider")])], "Only the shipped code is mapped."),
    ("insutype-to-coverage-type", "医保险种 insutype → Coverage.type", "nhsa-insutype", "http://hl7.org/fhir/ValueSet/coverage-type", False,
     [(V3ACT, [("310", "PUBLICPOL", "wider"), ("390", "PUBLICPOL", "wider"), ("392", None, "unmatched"), ("330", None, "unmatched"), ("340", None, "unmatched")])],
     "Supplementary schemes (392, 330, 340) have no Coverage type of their own."),
    ("discharge-method-to-discharge-disposition", "离院方式 → discharge-disposition", "discharge-method", "http://hl7.org/fhir/ValueSet/encounter-discharge-disposition", False,
     [("http://terminology.hl7.org/CodeSystem/discharge-disposition", [("1", "home", "inexact")])], "医嘱离院 (discharge on medical advice) usually means home."),
    ("ethnicity-numeric-to-letter", "GB 3304 民族 数字代码 → 字母代码", "gb-3304-ethnicity", vs_url("gb-3304-ethnicity-letter"), False,
     [(cs_url("gb-3304-ethnicity-letter"), [("01", "HA", "equal")])], "Only the shipped codes are mapped."),
    ("case-classification-to-condition-ver-status", "传染病报告卡 病例分类 → Condition.verificationStatus", "case-classification",
     "http://hl7.org/fhir/ValueSet/condition-ver-status", True,
     [("http://terminology.hl7.org/CodeSystem/condition-ver-status", [("确诊病例", "confirmed", "equivalent"), ("临床诊断病例", "provisional", "wider"),
      ("疑似病例", "provisional", "wider"), ("病原携带者", "confirmed", "wider")])],
     "Carriers are confirmed infections without disease and clinical diagnoses are not laboratory-confirmed: the card's class is kept in extension cn-case-classification."),
]
CM = {}
for (i, title, src, target_vs, exp, groups, note) in CONCEPTMAPS:
    gs = []
    for tsys, rows in groups:
        els = []
        src_cs = {c["code"]: c.get("display") for c in (lambda f: f(f, CS[src].get("concept", [])))(lambda f, cs: [x for c in cs for x in [c] + f(f, c.get("concept", []))])}
        for code, tcode, eq in rows:
            t = {"equivalence": eq}
            if tcode: t["code"] = tcode
            else: t["comment"] = "no equivalent"
            e = {"code": code}
            if src_cs.get(code): e["display"] = src_cs[code]
            e["target"] = [t]
            els.append(e)
        gs.append({"source": cs_url(src), "target": tsys, "element": els})
    res = {"resourceType": "ConceptMap", "id": "cn-" + i, "url": f"{BASE}/ConceptMap/{i}", "version": "0.1.0", "name": "CN" + i.replace("-", ""),
           "title": title, "status": "draft", "experimental": exp, "date": DATE, "publisher": "Huitong", "description": title + (". " + note if note else ""),
           "sourceCanonical": vs_url(src)}
    if target_vs: res["targetCanonical"] = target_vs
    res["group"] = gs
    CM[i] = res
    write("conceptmaps", "ConceptMap-cn-" + i, res)

# ---------------------------------------------------------------- Extensions
def ext(i, title, contexts, value_el, exp=False, desc=None):
    diff = [{"id": "Extension", "path": "Extension", "short": title, "definition": desc or title},
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": sd_url(i)}]
    diff.append(dict({"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1}, **value_el))
    res = {"resourceType": "StructureDefinition", "id": i, "url": sd_url(i), "version": "0.1.0", "name": "".join(p.capitalize() for p in i.split("-")).replace("Cn", "CN"),
           "title": title, "status": "draft", "experimental": exp, "date": DATE, "publisher": "Huitong", "description": desc or title, "fhirVersion": "4.0.1",
           "kind": "complex-type", "abstract": False, "context": [{"type": "element", "expression": c} for c in contexts], "type": "Extension",
           "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension", "derivation": "constraint", "differential": {"element": diff}}
    write("extensions", "StructureDefinition-" + i, res)
def coding_bound(vs): return {"type": [{"code": "Coding"}], "binding": {"strength": "required", "valueSet": vs}}
ETH_INV = {"key": "cn-eth-1", "severity": "error", "human": "民族代码格式: GB 3304 数字代码 01-56 或 两位大写字母代码",
           "expression": f"(system = '{cs_url('gb-3304-ethnicity')}' implies code.matches('^(0[1-9]|[1-4][0-9]|5[0-6])$')) and (system = '{cs_url('gb-3304-ethnicity-letter')}' implies code.matches('^[A-Z]{{2}}$'))"}
ext("cn-ethnicity", "民族", ["Patient", "RelatedPerson", "Practitioner"], dict(coding_bound(vs_url("gb-3304-ethnicity-any")), constraint=[ETH_INV]), desc="民族 (GB 3304, numeric or letter code)")
ext("cn-nationality", "国籍", ["Patient", "RelatedPerson"], {"type": [{"code": "CodeableConcept"}]}, desc="国籍 (GB/T 2659 / ISO 3166; not bound: the table is not in the reference)")
ext("cn-address-use", "地址类别 (户籍地址 / 现住址)", ["Address"], coding_bound(vs_url("address-use")))
ext("cn-original-sex", "原始性别代码 (GB/T 2261.1)", ["Patient", "RelatedPerson", "Practitioner"], coding_bound(vs_url("gbt-2261-1-sex")),
    desc="The national sex code as received; Patient.gender carries its administrative-gender mapping")
ext("cn-patient-locality", "病人属于", ["Condition", "Patient"], coding_bound(vs_url("patient-locality")), exp=True)
ext("cn-work-unit", "工作单位", ["Patient", "RelatedPerson"], {"type": [{"code": "string"}]})
ext("cn-id-document-type", "证件类别", ["Identifier"], coding_bound(vs_url("cv02-01-101-id-document-type")))
ext("cn-report-card-type", "报卡类别 (初次/订正)", ["Condition"], coding_bound(vs_url("report-card-type")), exp=True)
ext("cn-case-classification", "病例分类", ["Condition"], coding_bound(vs_url("case-classification")), exp=True)
ext("cn-occupation", "人群分类 (传染病报告卡 职业)", ["Patient"], coding_bound(vs_url("disease-report-occupation")), exp=True)
ext("cn-report-fill-date", "填卡日期", ["Condition"], {"type": [{"code": "date"}]}, exp=True)
ext("cn-nhsa-account-balance", "个人账户余额 (1101 insuinfo.balc)", ["Coverage"], {"type": [{"code": "Money"}]})
ext("cn-nhsa-civil-servant", "公务员标志 (1101 insuinfo.cvlserv_flag)", ["Coverage"], {"type": [{"code": "boolean"}]})

# ---------------------------------------------------------------- Profiles
def el(i, **kw):
    path = ".".join(p.split(":")[0] for p in i.split("."))
    d = {"id": i, "path": path}
    if ":" in i.split(".")[-1]: d["sliceName"] = i.split(".")[-1].split(":")[1]
    d.update(kw)
    return d

def id_inv(prefix):
    digits = " + ".join(f"value.substring({k},1).toInteger() * {w}" for k, w in enumerate([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]))
    fmt = "value.matches('^[0-9]{17}[0-9X]$')"
    date = "(value.substring(6,4) + '-' + value.substring(10,2) + '-' + value.substring(12,2))"
    return [
        {"key": "cn-id-1", "severity": "error", "human": "身份证号 is 18 characters: 17 digits and a check character 0-9 or X (GB 11643)", "expression": f"value.exists() implies {fmt}"},
        {"key": "cn-id-2", "severity": "error", "human": "身份证号 digits 7-14 are a real birth date from 1900 to today (GB 11643)",
         "expression": f"(value.exists() and {fmt}) implies ({date}.toDate().exists() and value.substring(6,4).toInteger() >= 1900 and {date}.toDate() <= today())"},
        {"key": "cn-id-3", "severity": "error", "human": "身份证号 check character (ISO 7064 MOD 11-2, GB 11643)",
         "expression": f"(value.exists() and {fmt}) implies '10X98765432'.substring(({digits}) mod 11, 1) = value.substring(17,1)"},
    ]
ID_INVARIANTS = id_inv("")

# 统一社会信用代码 (GB 32100-2015): 18 characters over 31 symbols (no I, O, S, V, Z); characters 3-8 are
# the GB/T 2260 division code; the 18th is a MOD 31 check character. The algorithm is GB 32100's, not
# the reference's: it is marked unverified in the README (checked against the standard's own example
# 91350100M000100Y43).
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
def uscc_inv():
    terms = " + ".join(f"'{USCC_ALPHABET}'.indexOf(value.substring({k},1)) * {w}"
                       for k, w in enumerate([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]))
    fmt = "value.matches('^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$')"
    return [
        {"key": "cn-uscc-1", "severity": "error", "human": "统一社会信用代码 is 18 characters of 0-9 and A-Y without I, O, S, V, Z, characters 3-8 digits (GB 32100)",
         "expression": f"value.exists() implies {fmt}"},
        {"key": "cn-uscc-2", "severity": "error", "human": "统一社会信用代码 check character (MOD 31, GB 32100)",
         "expression": f"(value.exists() and {fmt}) implies '{USCC_ALPHABET}'.substring((31 - (({terms}) mod 31)) mod 31, 1) = value.substring(17,1)"},
    ]
USCC_INVARIANTS = uscc_inv()

def id_slice(base, name, system, mn=0, mx="1", invariants=None):
    out = [el(f"{base}:{name}", min=mn, max=mx, **({"constraint": invariants} if invariants else {})),
           el(f"{base}:{name}.system", min=1, patternUri=system),
           el(f"{base}:{name}.value", min=1)]
    return out
def slicing_value(path, closed=False, disc="system"):
    return el(path, slicing={"discriminator": [{"type": "value", "path": disc}], "rules": "closed" if closed else "open"})
def ext_slice(base, name, ext_id, mn=0, mx="1", value=None):
    out = [el(f"{base}:{name}", min=mn, max=mx, type=[{"code": "Extension", "profile": [sd_url(ext_id)]}]),
           el(f"{base}:{name}.url", fixedUri=sd_url(ext_id))]
    if value: out.append(el(f"{base}:{name}.value[x]", **value))
    return out
def ext_slicing(base): return el(base, slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"})

PROFILES = {}
def profile(i, ty, title, diff, desc, exp=False, base=None):
    res = {"resourceType": "StructureDefinition", "id": i, "url": sd_url(i), "version": "0.1.0", "name": i, "title": title, "status": "draft", "experimental": exp,
           "date": DATE, "publisher": "Huitong", "description": desc, "fhirVersion": "4.0.1", "kind": "resource", "abstract": False, "type": ty,
           "baseDefinition": base or f"http://hl7.org/fhir/StructureDefinition/{ty}", "derivation": "constraint", "differential": {"element": [el(ty)] + diff}}
    PROFILES[i] = res
    write("profiles", "StructureDefinition-" + i, res)

SEX_INV = {"key": "cn-pat-sex", "severity": "error", "human": "gender agrees with the original GB/T 2261.1 code (1 male, 2 female, 0/9 unknown, 5/6 other)",
           "expression": f"extension('{sd_url('cn-original-sex')}').value.where(system = '{cs_url('gbt-2261-1-sex')}').all("
                         "(code = '1' implies %resource.gender = 'male') and (code = '2' implies %resource.gender = 'female') and "
                         "((code = '0' or code = '9') implies %resource.gender = 'unknown') and ((code = '5' or code = '6') implies %resource.gender = 'other'))"}
profile("CNPatient", "Patient", "中国患者 (CN Patient)", [
    el("Patient", constraint=[SEX_INV]),
    ext_slicing("Patient.extension"),
    *ext_slice("Patient.extension", "ethnicity", "cn-ethnicity", value=coding_bound(vs_url("gb-3304-ethnicity-any"))),
    *ext_slice("Patient.extension", "originalSex", "cn-original-sex", value=coding_bound(vs_url("gbt-2261-1-sex"))),
    *ext_slice("Patient.extension", "nationality", "cn-nationality"),
    slicing_value("Patient.identifier"),
    *id_slice("Patient.identifier", "residentId", NS["resident-id"], invariants=ID_INVARIANTS),
    *id_slice("Patient.identifier", "residentIdHl7China", ID_HL7CN, invariants=ID_INVARIANTS),
    *id_slice("Patient.identifier", "socialSecurityCard", NS["social-security-card"]),
    *id_slice("Patient.identifier", "residentHealthCard", NS["resident-health-card"]),
    *id_slice("Patient.identifier", "medicalRecordNo", NS["medical-record-no"]),
    el("Patient.name", min=1),
    el("Patient.name.text", min=1, short="姓名 (Chinese name as written)"),
    el("Patient.gender", min=1),
], "Patient for Chinese exchange: 身份证 slices (national and HL7 China OIDs) with the GB 11643 check, Chinese name as text, 民族 (GB 3304), the original GB/T 2261.1 sex code next to gender.")
# The ethnicity format rule rides on the slice's value (the validator applies a slice's own rules; extension profiles are not yet followed).
for e in PROFILES["CNPatient"]["differential"]["element"]:
    if e["id"] == "Patient.extension:ethnicity.value[x]":
        e["constraint"] = [ETH_INV]
write("profiles", "StructureDefinition-CNPatient", PROFILES["CNPatient"])

profile("CNPractitioner", "Practitioner", "中国医务人员 (CN Practitioner)", [
    el("Practitioner.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("Practitioner.identifier", "physicianLicense", NS["physician-license-no"]),
    *id_slice("Practitioner.identifier", "residentId", NS["resident-id"], invariants=ID_INVARIANTS),
    el("Practitioner.name", min=1), el("Practitioner.name.text", min=1),
], "Practitioner with 医师执业证书编号 and 身份证 identifiers and the Chinese name as text.")

profile("CNOrganization", "Organization", "中国医疗卫生机构 (CN Organization)", [
    el("Organization.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("Organization.identifier", "uscc", NS["uscc"], invariants=USCC_INVARIANTS),
    *id_slice("Organization.identifier", "registrationNo", NS["institution-registration-no"]),
    el("Organization.name", min=1),
], "Organization with 统一社会信用代码 (format and GB 32100 check character) and 医疗机构登记号.")

profile("CNEncounter", "Encounter", "中国就诊 (CN Encounter)", [
    el("Encounter.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}),
    *id_slice("Encounter.identifier", "visitSerialNo", NS["visit-serial-no"], mn=1),
    *id_slice("Encounter.identifier", "outpatientNo", NS["outpatient-no"]),
    *id_slice("Encounter.identifier", "inpatientNo", NS["inpatient-no"]),
    el("Encounter.class", binding={"strength": "required", "valueSet": vs_url("encounter-class")}),
    el("Encounter.subject", min=1),
    el("Encounter.period", min=1),
], "Encounter: 门诊 AMB / 住院 IMP / 急诊 EMER, identified by 就诊流水号 (required) and 门(急)诊号 / 住院号; other identifier systems are refused (closed slicing).")

ICD_INV = {"key": "cn-dx-1", "severity": "error", "human": "the diagnosis is coded in ICD-10 国家临床版 2.0 or 医保版 2.0",
           "expression": f"coding.where(system = '{cs_url('icd10-cn-clinical')}' or system = '{cs_url('icd10-nhsa')}').exists()"}
profile("CNCondition", "Condition", "中国诊断 (CN Condition)", [
    el("Condition.code", min=1, constraint=[ICD_INV], binding={"strength": "extensible", "valueSet": vs_url("diagnosis")}),
    el("Condition.recordedDate", min=1, short="诊断日期"),
    el("Condition.encounter", min=1),
], "Condition: diagnosis coded with ICD-10 national clinical 2.0 or 医保版 2.0 (both allowed; a crosswalk is kept outside this profile).")

ORG_PERF = lambda key: {"key": key, "severity": "error", "human": "the performing institution (an Organization) is named",
                        "expression": "performer.where(reference.startsWith('Organization/') or reference.startsWith('urn:uuid:') and display.exists()).exists()"}
profile("CNObservationLab", "Observation", "检验结果 (检验结果互认)", [
    el("Observation", constraint=[ORG_PERF("cn-lab-1")]),
    el("Observation.category", min=1, patternCodeableConcept={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}),
    el("Observation.subject", min=1), el("Observation.effective[x]", min=1),
    el("Observation.performer", min=1), el("Observation.method", min=1), el("Observation.specimen", min=1), el("Observation.referenceRange", min=1),
], "Laboratory result fit for mutual recognition (检验结果互认): specimen, method, reference range and the performing institution are required.")

profile("CNDiagnosticReportLab", "DiagnosticReport", "检验报告 (检验结果互认)", [
    el("DiagnosticReport", constraint=[ORG_PERF("cn-lab-2")]),
    el("DiagnosticReport.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("DiagnosticReport.identifier", "labReportNo", NS["lab-report-no"], mn=1),
    el("DiagnosticReport.category", min=1, patternCodeableConcept={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}),
    el("DiagnosticReport.subject", min=1), el("DiagnosticReport.issued", min=1),
    el("DiagnosticReport.performer", min=1), el("DiagnosticReport.specimen", min=1), el("DiagnosticReport.result", min=1),
], "Laboratory report: 检验报告单号, specimen, results and the performing institution are required.")

profile("CNDiagnosticReportImaging", "DiagnosticReport", "检查报告 (影像)", [
    el("DiagnosticReport.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("DiagnosticReport.identifier", "examReportNo", NS["exam-report-no"], mn=1),
    el("DiagnosticReport.category", min=1, patternCodeableConcept={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}),
    el("DiagnosticReport.subject", min=1), el("DiagnosticReport.issued", min=1), el("DiagnosticReport.conclusion", min=1, short="检查结论"),
], "Imaging report: 检查报告单号, 检查结论 required.")

profile("CNMedicationRequest", "MedicationRequest", "处方 (CN MedicationRequest)", [
    el("MedicationRequest.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("MedicationRequest.identifier", "prescriptionNo", NS["prescription-no"], mn=1),
    el("MedicationRequest.intent", fixedCode="order"),
    el("MedicationRequest.authoredOn", min=1), el("MedicationRequest.requester", min=1), el("MedicationRequest.dosageInstruction", min=1),
], "Prescription (处方): 处方号, prescriber, date and dosage required; intent is order.")

profile("CNImmunization", "Immunization", "预防接种 (CN Immunization)", [
    el("Immunization.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("Immunization.identifier", "traceCode", NS["vaccine-trace-code"], mn=1),
    el("Immunization.lotNumber", min=1, short="批号"), el("Immunization.manufacturer", min=1, short="生产企业"),
    el("Immunization.protocolApplied", min=1, short="剂次"),
], "Immunization record: 批号, 生产企业, 剂次 and 追溯码 required. The record's field list is unverified.", exp=True)

INS_INV = {"key": "cn-cov-1", "severity": "error", "human": "Coverage.type is coded with 医保险种 (insutype)",
           "expression": f"type.coding.where(system = '{cs_url('nhsa-insutype')}').exists()"}
profile("CNCoverage", "Coverage", "医保参保信息 (CN Coverage)", [
    el("Coverage", constraint=[INS_INV]),
    el("Coverage.type", min=1), el("Coverage.subscriberId", min=1, short="医保卡号 / 个人编号"), el("Coverage.period", min=1),
], "Coverage per 1101 insuinfo: insutype as type, the insured person's number, the period.")

profile("CNClaim", "Claim", "医保费用结算申请 (CN Claim)", [
    el("Claim.identifier", min=1), el("Claim.diagnosis", min=1), el("Claim.total", min=1, short="medfee_sumamt"), el("Claim.item", min=1),
], "Claim for 2206/2207 (predetermination / settlement): identifier, diagnosis, items and the fee total required.")

profile("CNClaimResponse", "ClaimResponse", "医保结算结果 (CN ClaimResponse)", [
    el("ClaimResponse.identifier", min=1), el("ClaimResponse.total", min=1), el("ClaimResponse.payment", min=1, short="psn_cash_pay"),
], "ClaimResponse for 2206/2207: identifier, totals and the payment required.")

SETL = lambda code: {"coding": [{"system": cs_url("nhsa-settlement-amount"), "code": code}]}
# The settlement adds up: the funds' payments plus what the person paid (account and cash) plus what
# the hospital bears equal the total (医疗费总额); the fund total, when sent, is the sum of the funds.
def amt(codes): return f"total.where(category.coding.where(system = '{cs_url('nhsa-settlement-amount')}' and code in {codes}).exists()).amount.value"
EOB_FUND_CODES = "('hifp_pay' | 'cvlserv_pay' | 'hifes_pay' | 'hifmi_pay' | 'hifob_pay' | 'maf_pay' | 'oth_pay')"
EOB_ALL_CODES = EOB_FUND_CODES[:-1] + " | 'acct_pay' | 'psn_cash_pay' | 'hosp_part_amt')"
EOB_SUM = {"key": "cn-eob-1", "severity": "error",
           "human": "Σ fund payments (hifp_pay, cvlserv_pay, hifes_pay, hifmi_pay, hifob_pay, maf_pay, oth_pay) + acct_pay + psn_cash_pay + hosp_part_amt = medfee_sumamt",
           "expression": amt(EOB_ALL_CODES) + ".aggregate($total + $this, 0) = " + amt("('medfee_sumamt')")}
EOB_FUND = {"key": "cn-eob-2", "severity": "error", "human": "fund_pay_sumamt, when present, is the sum of the fund payments",
            "expression": amt("('fund_pay_sumamt')") + ".exists() implies (" + amt(EOB_FUND_CODES) + ".aggregate($total + $this, 0) = " + amt("('fund_pay_sumamt')") + ")"}
profile("CNExplanationOfBenefit", "ExplanationOfBenefit", "医保结算单 (CN ExplanationOfBenefit)", [
    el("ExplanationOfBenefit", constraint=[EOB_SUM, EOB_FUND]),
    el("ExplanationOfBenefit.identifier", min=1, slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
    *id_slice("ExplanationOfBenefit.identifier", "setlId", NS["nhsa-setl-id"], mn=1),
    el("ExplanationOfBenefit.total", min=1, slicing={"discriminator": [{"type": "pattern", "path": "category"}], "rules": "open"}),
    el("ExplanationOfBenefit.total.category", binding={"strength": "required", "valueSet": vs_url("nhsa-settlement-amount")}),
    el("ExplanationOfBenefit.total:medfeeSumamt", min=1, max="1"), el("ExplanationOfBenefit.total:medfeeSumamt.category", patternCodeableConcept=SETL("medfee_sumamt")),
    el("ExplanationOfBenefit.total:fundPaySumamt", min=0, max="1"), el("ExplanationOfBenefit.total:fundPaySumamt.category", patternCodeableConcept=SETL("fund_pay_sumamt")),
    el("ExplanationOfBenefit.total:psnCashPay", min=1, max="1"), el("ExplanationOfBenefit.total:psnCashPay.category", patternCodeableConcept=SETL("psn_cash_pay")),
], "Settlement (2207/2304): setl_id, medfee_sumamt and psn_cash_pay required; every total is one of the NHSA settlement fields.")

profile("CNComposition", "Composition", "电子病历共享文档 (WS/T 500)", [
    el("Composition.identifier", min=1), el("Composition.identifier.system", min=1, patternUri=NS["document-serial-no"]),
    el("Composition.type", binding={"strength": "required", "valueSet": vs_url("wst-500-document-type")}),
    el("Composition.subject", min=1), el("Composition.section", min=1), el("Composition.custodian", min=1),
], "A WS/T 500 shared document: document serial no., type from WS/T 500, subject, custodian and sections required.")
FAMILIES = {"C0001": ("病历概要", False), "C0002": ("门(急)诊病历", True), "C0004": ("西药处方", True), "C0006": ("检查记录", True), "C0007": ("检验记录", True),
            "C0032": ("住院病案首页", True), "C0034": ("入院记录", True), "C0049": ("出院记录", True), "C0053": ("出院小结", True)}
for code, (title, enc) in FAMILIES.items():
    diff = [el("Composition.type", patternCodeableConcept={"coding": [{"system": cs_url("wst-500-document-type"), "code": code}]})]
    if enc: diff.append(el("Composition.encounter", min=1))
    profile("CNComposition" + code, "Composition", f"{code} {title} (WS/T 500)", diff,
            f"WS/T 500 {code} {title}: CNComposition with the type fixed" + (" and the encounter required." if enc else "."), base=sd_url("CNComposition"))

profile("CNDocumentReference", "DocumentReference", "共享文档索引 (CN DocumentReference)", [
    el("DocumentReference.masterIdentifier", min=1),
    el("DocumentReference.type", min=1, binding={"strength": "required", "valueSet": vs_url("wst-500-document-type")}),
    el("DocumentReference.subject", min=1), el("DocumentReference.date", min=1),
    el("DocumentReference.content.attachment.contentType", min=1),
], "Index entry of a WS/T 500 document (document registry, WS/T 846 part 6).")

DISEASE_INV = {"key": "cn-idr-1", "severity": "error", "human": "the disease is coded from the notifiable-disease list",
               "expression": f"code.coding.where(system = '{cs_url('infectious-disease')}').exists()"}
profile("CNInfectiousDiseaseReport", "Condition", "传染病报告卡 (CN Infectious Disease Report)", [
    el("Condition", constraint=[DISEASE_INV]),
    ext_slicing("Condition.extension"),
    *ext_slice("Condition.extension", "reportCardType", "cn-report-card-type", mn=1, value=coding_bound(vs_url("report-card-type"))),
    *ext_slice("Condition.extension", "caseClassification", "cn-case-classification", mn=1, value=coding_bound(vs_url("case-classification"))),
    *ext_slice("Condition.extension", "patientLocality", "cn-patient-locality", value=coding_bound(vs_url("patient-locality"))),
    el("Condition.code", min=1), el("Condition.onset[x]", min=1, short="发病日期"), el("Condition.recordedDate", min=1, short="诊断日期"),
    el("Condition.recorder", min=1, short="报告医生"), el("Condition.verificationStatus", min=1),
], "传染病报告卡 as a Condition: card type, case classification, disease code, onset and diagnosis dates, reporting doctor.", exp=True)

print(f"{len(written)} resources written")

# ---------------------------------------------------------------- Examples
# Each profile gets valid and invalid instances; expected.json names, for each invalid one, the
# error it must get (profile, element, rule), which tests/cn_profiles.rs asserts exactly.
import copy
EX = os.path.join(ROOT, "examples")
shutil.rmtree(EX, ignore_errors=True)
EXPECTED = {}
def save(profile_id, name, res):
    d = os.path.join(EX, profile_id)
    os.makedirs(d, exist_ok=True)
    res = copy.deepcopy(res)
    res.setdefault("meta", {})["profile"] = [sd_url(profile_id)]
    with open(os.path.join(d, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=False, indent=2)
        f.write("\n")
def valid(profile_id, n, res): save(profile_id, f"valid-{n}", res)
def invalid(profile_id, name, res, expression, rule):
    save(profile_id, "invalid-" + name, res)
    EXPECTED[f"{profile_id}/invalid-{name}.json"] = {"profile": sd_url(profile_id), "expression": expression, "rule": rule}
def mod(res, f):
    r = copy.deepcopy(res); f(r); return r

def sfz(v, system=NS["resident-id"]): return {"system": system, "value": v}
def coding(cs, code, display=None):
    c = {"system": cs_url(cs), "code": code}
    if display: c["display"] = display
    return c
def ext_v(ext_id, **v): return dict({"url": sd_url(ext_id)}, **v)

patient = {"resourceType": "Patient", "id": "zhang-san",
           "extension": [ext_v("cn-ethnicity", valueCoding=coding("gb-3304-ethnicity", "01", "汉族")),
                         ext_v("cn-original-sex", valueCoding=coding("gbt-2261-1-sex", "1", "男性"))],
           "identifier": [sfz("11010519491231002X"), {"system": NS["medical-record-no"], "value": "BA0001"}],
           "name": [{"text": "张三", "family": "张", "given": ["三"]}], "gender": "male", "birthDate": "1949-12-31"}
P = "CNPatient"
valid(P, 1, patient)
valid(P, 2, mod(patient, lambda r: (r.update(identifier=[sfz("440304199001011233", ID_HL7CN)]), r.update(gender="female", birthDate="1990-01-01"),
                                      r["extension"].__setitem__(1, ext_v("cn-original-sex", valueCoding=coding("gbt-2261-1-sex", "2", "女性"))),
                                      r["extension"].__setitem__(0, ext_v("cn-ethnicity", valueCoding=coding("gb-3304-ethnicity-letter", "HA", "汉族"))))))
valid(P, 3, {"resourceType": "Patient", "id": "li-si", "name": [{"text": "李四"}], "gender": "other",
             "extension": [ext_v("cn-original-sex", valueCoding=coding("gbt-2261-1-sex", "6"))],
             "identifier": [{"system": NS["resident-health-card"], "value": "H1234567"}]})
invalid(P, "check-digit", mod(patient, lambda r: r["identifier"].__setitem__(0, sfz("120109197706015516"))), "Patient.identifier[0]", "constraint cn-id-3")
invalid(P, "length", mod(patient, lambda r: r["identifier"].__setitem__(0, sfz("11010519491231002"))), "Patient.identifier[0]", "constraint cn-id-1")
invalid(P, "birth-date", mod(patient, lambda r: r["identifier"].__setitem__(0, sfz("110105194902300020", ID_HL7CN))), "Patient.identifier[0]", "constraint cn-id-2")
invalid(P, "sex-code", mod(patient, lambda r: r["extension"].__setitem__(1, ext_v("cn-original-sex", valueCoding=coding("gbt-2261-1-sex", "3")))),
        "Patient.extension[1].valueCoding", "not in the value set " + vs_url("gbt-2261-1-sex"))
invalid(P, "ethnicity-format", mod(patient, lambda r: r["extension"].__setitem__(0, ext_v("cn-ethnicity", valueCoding=coding("gb-3304-ethnicity", "1")))),
        "Patient.extension[0].valueCoding", "constraint cn-eth-1")
invalid(P, "sex-mismatch", mod(patient, lambda r: r.update(gender="female")), "Patient", "constraint cn-pat-sex")
invalid(P, "name-text", mod(patient, lambda r: r["name"][0].pop("text")), "Patient.name[0]", "Patient.name.text is required: minimum cardinality 1")

pract = {"resourceType": "Practitioner", "id": "wang-wu", "identifier": [{"system": NS["physician-license-no"], "value": "110110000012345"}, sfz("11010519491231002X")],
         "name": [{"text": "王五"}]}
P = "CNPractitioner"
valid(P, 1, pract)
valid(P, 2, mod(pract, lambda r: r.update(identifier=[{"system": NS["physician-license-no"], "value": "220"}])))
valid(P, 3, mod(pract, lambda r: r.update(identifier=[sfz("320102198506150049")], gender="male")))
invalid(P, "check-digit", mod(pract, lambda r: r["identifier"].__setitem__(1, sfz("110105194912310022"))), "Practitioner.identifier[1]", "constraint cn-id-3")
invalid(P, "two-licenses", mod(pract, lambda r: r["identifier"].append({"system": NS["physician-license-no"], "value": "2"})), "Practitioner", "slice 'physicianLicense' of Practitioner.identifier: maximum cardinality 1, found 2")
invalid(P, "no-name", mod(pract, lambda r: r.pop("name")), "Practitioner", "Practitioner.name is required: minimum cardinality 1")
invalid(P, "no-identifier", mod(pract, lambda r: r.pop("identifier")), "Practitioner", "Practitioner.identifier is required: minimum cardinality 1")

org = {"resourceType": "Organization", "id": "hospital-1", "identifier": [{"system": NS["uscc"], "value": "121100004000000001"}, {"system": NS["institution-registration-no"], "value": "PDY00001X11010515A1001"}],
       "name": "北京市某某医院"}
P = "CNOrganization"
valid(P, 1, org)
valid(P, 2, mod(org, lambda r: r.update(identifier=[{"system": NS["uscc"], "value": "91350100M000100Y43"}])))
valid(P, 3, mod(org, lambda r: r.update(identifier=[{"system": "urn:oid:2.16.156.10011.1.5", "value": "H11010500001"}], alias=["某某医院"])))
invalid(P, "no-name", mod(org, lambda r: r.pop("name")), "Organization", "Organization.name is required: minimum cardinality 1")
invalid(P, "two-uscc", mod(org, lambda r: r["identifier"].append({"system": NS["uscc"], "value": "91110000600037341L"})), "Organization", "slice 'uscc' of Organization.identifier: maximum cardinality 1, found 2")
invalid(P, "uscc-without-value", mod(org, lambda r: r["identifier"][0].pop("value")), "Organization.identifier[0]", "Organization.identifier.value is required: minimum cardinality 1")
invalid(P, "no-identifier", mod(org, lambda r: r.pop("identifier")), "Organization", "Organization.identifier is required: minimum cardinality 1")
invalid(P, "uscc-check", mod(org, lambda r: r["identifier"][0].update(value="121100004000000002")), "Organization.identifier[0]", "constraint cn-uscc-2")
invalid(P, "uscc-letters", mod(org, lambda r: r["identifier"][0].update(value="12110000400000000I")), "Organization.identifier[0]", "constraint cn-uscc-1")

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
enc = {"resourceType": "Encounter", "id": "visit-1", "identifier": [{"system": NS["visit-serial-no"], "value": "MZ20261201001"}, {"system": NS["outpatient-no"], "value": "0001"}],
       "status": "finished", "class": {"system": ACT, "code": "AMB", "display": "ambulatory"}, "subject": {"reference": "Patient/zhang-san"},
       "period": {"start": "2026-12-01T08:00:00+08:00", "end": "2026-12-01T09:00:00+08:00"}}
P = "CNEncounter"
valid(P, 1, enc)
valid(P, 2, mod(enc, lambda r: (r.update(**{"class": {"system": ACT, "code": "IMP"}}), r["identifier"].__setitem__(1, {"system": NS["inpatient-no"], "value": "ZY0001"}))))
valid(P, 3, mod(enc, lambda r: (r.update(**{"class": {"system": ACT, "code": "EMER"}}), r["identifier"].pop(1))))
invalid(P, "class", mod(enc, lambda r: r.update(**{"class": {"system": ACT, "code": "HH"}})), "Encounter.class", "not in the value set " + vs_url("encounter-class"))
invalid(P, "unknown-identifier-system", mod(enc, lambda r: r["identifier"].append({"system": "http://example.org/his/visit", "value": "9"})), "Encounter.identifier[2]", "Encounter.identifier: the slicing is closed and this matches no slice")
invalid(P, "no-visit-serial-no", mod(enc, lambda r: r["identifier"].pop(0)), "Encounter", "slice 'visitSerialNo' of Encounter.identifier: minimum cardinality 1, found 0")
invalid(P, "no-subject", mod(enc, lambda r: r.pop("subject")), "Encounter", "Encounter.subject is required: minimum cardinality 1")

ICDC, ICDN = cs_url("icd10-cn-clinical"), cs_url("icd10-nhsa")
cond = {"resourceType": "Condition", "id": "dx-1", "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": ICDC, "code": "J18.900", "display": "肺炎"}]}, "subject": {"reference": "Patient/zhang-san"},
        "encounter": {"reference": "Encounter/visit-1"}, "recordedDate": "2026-12-01"}
P = "CNCondition"
valid(P, 1, cond)
valid(P, 2, mod(cond, lambda r: r.update(code={"coding": [{"system": ICDN, "code": "J18.900", "display": "肺炎"}]})))
valid(P, 3, mod(cond, lambda r: r["code"]["coding"].append({"system": ICDN, "code": "J18.900"})))
invalid(P, "snomed-only", mod(cond, lambda r: r.update(code={"coding": [{"system": "http://snomed.info/sct", "code": "233604007"}]})), "Condition.code", "constraint cn-dx-1")
invalid(P, "text-only", mod(cond, lambda r: r.update(code={"text": "肺炎"})), "Condition.code", "constraint cn-dx-1")
invalid(P, "no-recorded-date", mod(cond, lambda r: r.pop("recordedDate")), "Condition", "Condition.recordedDate is required: minimum cardinality 1")
invalid(P, "no-encounter", mod(cond, lambda r: r.pop("encounter")), "Condition", "Condition.encounter is required: minimum cardinality 1")

obs = {"resourceType": "Observation", "id": "glu-1", "status": "final",
       "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
       "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}], "text": "葡萄糖"},
       "subject": {"reference": "Patient/zhang-san"}, "effectiveDateTime": "2026-12-01T08:30:00+08:00",
       "performer": [{"reference": "Organization/hospital-1"}], "valueQuantity": {"value": 5.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
       "method": {"text": "己糖激酶法"}, "specimen": {"reference": "Specimen/s1"},
       "referenceRange": [{"low": {"value": 3.9, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}, "high": {"value": 6.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}]}
P = "CNObservationLab"
valid(P, 1, obs)
valid(P, 2, mod(obs, lambda r: r["performer"].insert(0, {"reference": "Practitioner/wang-wu"})))
valid(P, 3, mod(obs, lambda r: (r.pop("valueQuantity"), r.update(valueString="阴性", referenceRange=[{"text": "阴性"}]))))
invalid(P, "no-specimen", mod(obs, lambda r: r.pop("specimen")), "Observation", "Observation.specimen is required: minimum cardinality 1")
invalid(P, "no-method", mod(obs, lambda r: r.pop("method")), "Observation", "Observation.method is required: minimum cardinality 1")
invalid(P, "no-reference-range", mod(obs, lambda r: r.pop("referenceRange")), "Observation", "Observation.referenceRange is required: minimum cardinality 1")
invalid(P, "no-institution", mod(obs, lambda r: r.update(performer=[{"reference": "Practitioner/wang-wu"}])), "Observation", "constraint cn-lab-1")
invalid(P, "not-laboratory", mod(obs, lambda r: r.update(category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}])),
        "Observation.category[0]", "Observation.category: value must match the pattern")

drl = {"resourceType": "DiagnosticReport", "id": "lab-report-1", "identifier": [{"system": NS["lab-report-no"], "value": "JY20261201001"}], "status": "final",
       "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
       "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}], "text": "生化检验"}, "subject": {"reference": "Patient/zhang-san"},
       "issued": "2026-12-01T10:00:00+08:00", "performer": [{"reference": "Organization/hospital-1"}], "specimen": [{"reference": "Specimen/s1"}],
       "result": [{"reference": "Observation/glu-1"}]}
P = "CNDiagnosticReportLab"
valid(P, 1, drl)
valid(P, 2, mod(drl, lambda r: r["identifier"].append({"system": "http://example.org/lis", "value": "L1"})))
valid(P, 3, mod(drl, lambda r: r["performer"].append({"reference": "Practitioner/wang-wu"})))
invalid(P, "no-report-no", mod(drl, lambda r: r.update(identifier=[{"system": "http://example.org/lis", "value": "L1"}])), "DiagnosticReport", "slice 'labReportNo' of DiagnosticReport.identifier: minimum cardinality 1, found 0")
invalid(P, "no-specimen", mod(drl, lambda r: r.pop("specimen")), "DiagnosticReport", "DiagnosticReport.specimen is required: minimum cardinality 1")
invalid(P, "no-institution", mod(drl, lambda r: r.update(performer=[{"reference": "Practitioner/wang-wu"}])), "DiagnosticReport", "constraint cn-lab-2")
invalid(P, "no-result", mod(drl, lambda r: r.pop("result")), "DiagnosticReport", "DiagnosticReport.result is required: minimum cardinality 1")

dri = {"resourceType": "DiagnosticReport", "id": "ct-1", "identifier": [{"system": NS["exam-report-no"], "value": "JC20261201001"}], "status": "final",
       "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
       "code": {"text": "胸部CT平扫"}, "subject": {"reference": "Patient/zhang-san"}, "issued": "2026-12-01T11:00:00+08:00", "conclusion": "双肺未见明显异常"}
P = "CNDiagnosticReportImaging"
valid(P, 1, dri)
valid(P, 2, mod(dri, lambda r: r.update(performer=[{"reference": "Organization/hospital-1"}])))
valid(P, 3, mod(dri, lambda r: r.update(imagingStudy=[{"reference": "ImagingStudy/st1"}])))
invalid(P, "no-report-no", mod(dri, lambda r: r.pop("identifier")), "DiagnosticReport", "DiagnosticReport.identifier is required: minimum cardinality 1")
invalid(P, "no-conclusion", mod(dri, lambda r: r.pop("conclusion")), "DiagnosticReport", "DiagnosticReport.conclusion is required: minimum cardinality 1")
invalid(P, "lab-category", mod(dri, lambda r: r.update(category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}])),
        "DiagnosticReport.category[0]", "DiagnosticReport.category: value must match the pattern")

mr = {"resourceType": "MedicationRequest", "id": "rx-1", "identifier": [{"system": NS["prescription-no"], "value": "CF20261201001"}], "status": "active", "intent": "order",
      "medicationCodeableConcept": {"text": "阿莫西林胶囊 0.25g"}, "subject": {"reference": "Patient/zhang-san"}, "authoredOn": "2026-12-01T09:00:00+08:00",
      "requester": {"reference": "Practitioner/wang-wu"}, "dosageInstruction": [{"text": "口服 每次0.5g 每日3次"}]}
P = "CNMedicationRequest"
valid(P, 1, mr)
valid(P, 2, mod(mr, lambda r: r["identifier"].append({"system": NS["order-no"], "value": "YZ1"})))
valid(P, 3, mod(mr, lambda r: r.update(dispenseRequest={"quantity": {"value": 24}})))
invalid(P, "no-prescription-no", mod(mr, lambda r: r.update(identifier=[{"system": NS["order-no"], "value": "YZ1"}])), "MedicationRequest", "slice 'prescriptionNo' of MedicationRequest.identifier: minimum cardinality 1, found 0")
invalid(P, "intent-plan", mod(mr, lambda r: r.update(intent="plan")), "MedicationRequest.intent", "MedicationRequest.intent: value must be exactly")
invalid(P, "no-dosage", mod(mr, lambda r: r.pop("dosageInstruction")), "MedicationRequest", "MedicationRequest.dosageInstruction is required: minimum cardinality 1")
invalid(P, "no-requester", mod(mr, lambda r: r.pop("requester")), "MedicationRequest", "MedicationRequest.requester is required: minimum cardinality 1")

imm = {"resourceType": "Immunization", "id": "imm-1", "identifier": [{"system": NS["vaccine-trace-code"], "value": "81234567890123456789"}], "status": "completed",
       "vaccineCode": {"text": "乙肝疫苗(CHO)"}, "patient": {"reference": "Patient/zhang-san"}, "occurrenceDateTime": "2026-12-01T10:00:00+08:00",
       "manufacturer": {"display": "某生物制品有限公司"}, "lotNumber": "202611A", "protocolApplied": [{"doseNumberPositiveInt": 1}]}
P = "CNImmunization"
valid(P, 1, imm)
valid(P, 2, mod(imm, lambda r: r["protocolApplied"].__setitem__(0, {"doseNumberPositiveInt": 2, "series": "免疫规划"})))
valid(P, 3, mod(imm, lambda r: r.update(expirationDate="2028-06-30")))
invalid(P, "no-lot", mod(imm, lambda r: r.pop("lotNumber")), "Immunization", "Immunization.lotNumber is required: minimum cardinality 1")
invalid(P, "no-manufacturer", mod(imm, lambda r: r.pop("manufacturer")), "Immunization", "Immunization.manufacturer is required: minimum cardinality 1")
invalid(P, "no-dose", mod(imm, lambda r: r.pop("protocolApplied")), "Immunization", "Immunization.protocolApplied is required: minimum cardinality 1")
invalid(P, "no-trace-code", mod(imm, lambda r: r.update(identifier=[{"system": "http://example.org/x", "value": "1"}])), "Immunization", "slice 'traceCode' of Immunization.identifier: minimum cardinality 1, found 0")

cov = {"resourceType": "Coverage", "id": "cov-1", "status": "active", "type": {"coding": [coding("nhsa-insutype", "310", "职工基本医疗保险")]},
       "subscriberId": "11000012345678", "beneficiary": {"reference": "Patient/zhang-san"}, "period": {"start": "2026-01-01"},
       "payor": [{"display": "北京市医疗保障局"}]}
P = "CNCoverage"
valid(P, 1, cov)
valid(P, 2, mod(cov, lambda r: r.update(type={"coding": [coding("nhsa-insutype", "390")]})))
valid(P, 3, mod(cov, lambda r: r["type"]["coding"].append({"system": ACT, "code": "PUBLICPOL"})))
invalid(P, "no-type", mod(cov, lambda r: r.pop("type")), "Coverage", "Coverage.type is required: minimum cardinality 1")
invalid(P, "type-not-insutype", mod(cov, lambda r: r.update(type={"coding": [{"system": ACT, "code": "PUBLICPOL"}]})), "Coverage", "constraint cn-cov-1")
invalid(P, "no-subscriber-id", mod(cov, lambda r: r.pop("subscriberId")), "Coverage", "Coverage.subscriberId is required: minimum cardinality 1")

claim = {"resourceType": "Claim", "id": "claim-1", "identifier": [{"system": "http://example.org/his/mdtrt", "value": "MD001"}], "status": "active",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]}, "use": "claim",
         "patient": {"reference": "Patient/zhang-san"}, "created": "2026-12-01", "provider": {"reference": "Organization/hospital-1"},
         "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
         "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"system": ICDN, "code": "J18.900"}]}}],
         "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-1"}}],
         "item": [{"sequence": 1, "productOrService": {"coding": [{"system": "http://example.org/nhsa/med_list_codg", "code": "XJ01CAA040E001010100959"}]}, "net": {"value": 36.5, "currency": "CNY"}}],
         "total": {"value": 36.5, "currency": "CNY"}}
P = "CNClaim"
valid(P, 1, claim)
valid(P, 2, mod(claim, lambda r: r.update(use="predetermination")))
valid(P, 3, mod(claim, lambda r: r["item"].append({"sequence": 2, "productOrService": {"text": "挂号费"}, "net": {"value": 5, "currency": "CNY"}})))
invalid(P, "no-total", mod(claim, lambda r: r.pop("total")), "Claim", "Claim.total is required: minimum cardinality 1")
invalid(P, "no-diagnosis", mod(claim, lambda r: r.pop("diagnosis")), "Claim", "Claim.diagnosis is required: minimum cardinality 1")
invalid(P, "no-identifier", mod(claim, lambda r: r.pop("identifier")), "Claim", "Claim.identifier is required: minimum cardinality 1")

cr = {"resourceType": "ClaimResponse", "id": "cr-1", "identifier": [{"system": NS["nhsa-setl-id"], "value": "SETL001"}], "status": "active",
      "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]}, "use": "claim",
      "patient": {"reference": "Patient/zhang-san"}, "created": "2026-12-01", "insurer": {"display": "北京市医疗保障局"}, "outcome": "complete",
      "total": [{"category": {"coding": [coding("nhsa-settlement-amount", "medfee_sumamt")]}, "amount": {"value": 36.5, "currency": "CNY"}}],
      "payment": {"type": {"text": "个人现金支付"}, "amount": {"value": 10.0, "currency": "CNY"}}}
P = "CNClaimResponse"
valid(P, 1, cr)
valid(P, 2, mod(cr, lambda r: r.update(use="preauthorization")))
valid(P, 3, mod(cr, lambda r: r["total"].append({"category": {"coding": [coding("nhsa-settlement-amount", "hifp_pay")]}, "amount": {"value": 26.5, "currency": "CNY"}})))
invalid(P, "no-identifier", mod(cr, lambda r: r.pop("identifier")), "ClaimResponse", "ClaimResponse.identifier is required: minimum cardinality 1")
invalid(P, "no-total", mod(cr, lambda r: r.pop("total")), "ClaimResponse", "ClaimResponse.total is required: minimum cardinality 1")
invalid(P, "no-payment", mod(cr, lambda r: r.pop("payment")), "ClaimResponse", "ClaimResponse.payment is required: minimum cardinality 1")

def total(code, v): return {"category": {"coding": [coding("nhsa-settlement-amount", code)]}, "amount": {"value": v, "currency": "CNY"}}
eob = {"resourceType": "ExplanationOfBenefit", "id": "eob-1", "identifier": [{"system": NS["nhsa-setl-id"], "value": "SETL001"}], "status": "active",
       "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]}, "use": "claim",
       "patient": {"reference": "Patient/zhang-san"}, "created": "2026-12-01", "insurer": {"display": "北京市医疗保障局"}, "provider": {"reference": "Organization/hospital-1"},
       "outcome": "complete", "insurance": [{"focal": True, "coverage": {"reference": "Coverage/cov-1"}}],
       "total": [total("medfee_sumamt", 36.5), total("hifp_pay", 26.5), total("psn_cash_pay", 10.0)],
       "payment": {"amount": {"value": 10.0, "currency": "CNY"}}}
P = "CNExplanationOfBenefit"
valid(P, 1, eob)
valid(P, 2, mod(eob, lambda r: r["total"].append(total("fund_pay_sumamt", 26.5))))
valid(P, 3, mod(eob, lambda r: r.update(total=[total("medfee_sumamt", 5), total("psn_cash_pay", 5)])))
invalid(P, "no-medfee-sumamt", mod(eob, lambda r: r["total"].pop(0)), "ExplanationOfBenefit", "slice 'medfeeSumamt' of ExplanationOfBenefit.total: minimum cardinality 1, found 0")
invalid(P, "unknown-amount", mod(eob, lambda r: r["total"].append(total("tip", 1))), "ExplanationOfBenefit.total[3].category", "not in the value set " + vs_url("nhsa-settlement-amount"))
invalid(P, "no-setl-id", mod(eob, lambda r: r.update(identifier=[{"system": "http://example.org/x", "value": "1"}])), "ExplanationOfBenefit", "slice 'setlId' of ExplanationOfBenefit.identifier: minimum cardinality 1, found 0")
invalid(P, "totals-do-not-add-up", mod(eob, lambda r: r["total"].__setitem__(0, total("medfee_sumamt", 40))), "ExplanationOfBenefit", "constraint cn-eob-1")
invalid(P, "fund-total-wrong", mod(eob, lambda r: r["total"].append(total("fund_pay_sumamt", 20))), "ExplanationOfBenefit", "constraint cn-eob-2")

def comp(code, title, enc):
    c = {"resourceType": "Composition", "id": "doc-" + code.lower(), "identifier": {"system": NS["document-serial-no"], "value": "DOC-" + code}, "status": "final",
         "type": {"coding": [coding("wst-500-document-type", code, title)]}, "subject": {"reference": "Patient/zhang-san"},
         "date": "2026-12-01T12:00:00+08:00", "author": [{"reference": "Practitioner/wang-wu"}], "title": title, "custodian": {"reference": "Organization/hospital-1"},
         "section": [{"title": title, "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + title + "</div>"}}]}
    if enc: c["encounter"] = {"reference": "Encounter/visit-1"}
    return c
for code, (title, enc) in FAMILIES.items():
    P = "CNComposition" + code
    c = comp(code, title, enc)
    valid(P, 1, c)
    valid(P, 2, mod(c, lambda r: r["section"].append({"title": "附注", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">附注</div>"}})))
    valid(P, 3, mod(c, lambda r: r.update(confidentiality="N", attester=[{"mode": "legal", "party": {"reference": "Practitioner/wang-wu"}}])))
    other = "C0003" if code != "C0003" else "C0005"
    invalid(P, "other-type", mod(c, lambda r: r.update(type={"coding": [coding("wst-500-document-type", other)]})), "Composition.type", "Composition.type: value must match the pattern")
    invalid(P, "no-section", mod(c, lambda r: r.pop("section")), "Composition", "Composition.section is required: minimum cardinality 1")
    invalid(P, "no-subject", mod(c, lambda r: r.pop("subject")), "Composition", "Composition.subject is required: minimum cardinality 1")
    if enc:
        invalid(P, "no-encounter", mod(c, lambda r: r.pop("encounter")), "Composition", "Composition.encounter is required: minimum cardinality 1")
    else:
        invalid(P, "no-custodian", mod(c, lambda r: r.pop("custodian")), "Composition", "Composition.custodian is required: minimum cardinality 1")
P = "CNComposition"
c = comp("C0013", "输血记录", False)
valid(P, 1, c); valid(P, 2, comp("C0050", "死亡记录", True)); valid(P, 3, comp("C0001", "病历概要", False))
invalid(P, "type-unknown", mod(c, lambda r: r.update(type={"coding": [coding("wst-500-document-type", "C0054")]})), "Composition.type", "not in the value set " + vs_url("wst-500-document-type"))
invalid(P, "serial-no-system", mod(c, lambda r: r.update(identifier={"system": "http://example.org/doc", "value": "1"})), "Composition.identifier.system", "Composition.identifier.system: value must match the pattern")
invalid(P, "no-custodian", mod(c, lambda r: r.pop("custodian")), "Composition", "Composition.custodian is required: minimum cardinality 1")

dref = {"resourceType": "DocumentReference", "id": "docref-1", "masterIdentifier": {"system": NS["document-serial-no"], "value": "DOC-C0032"}, "status": "current",
        "type": {"coding": [coding("wst-500-document-type", "C0032", "住院病案首页")]}, "subject": {"reference": "Patient/zhang-san"}, "date": "2026-12-01T12:00:00+08:00",
        "content": [{"attachment": {"contentType": "application/hl7-cda+xml", "url": "Binary/cda-c0032"}}]}
P = "CNDocumentReference"
valid(P, 1, dref)
valid(P, 2, mod(dref, lambda r: r["content"].append({"attachment": {"contentType": "application/fhir+json", "url": "Bundle/doc-c0032"}})))
valid(P, 3, mod(dref, lambda r: r.update(type={"coding": [coding("wst-500-document-type", "C0049")]})))
invalid(P, "type-unknown", mod(dref, lambda r: r.update(type={"coding": [coding("wst-500-document-type", "C0099")]})), "DocumentReference.type", "not in the value set " + vs_url("wst-500-document-type"))
invalid(P, "no-master-identifier", mod(dref, lambda r: r.pop("masterIdentifier")), "DocumentReference", "DocumentReference.masterIdentifier is required: minimum cardinality 1")
invalid(P, "no-subject", mod(dref, lambda r: r.pop("subject")), "DocumentReference", "DocumentReference.subject is required: minimum cardinality 1")
invalid(P, "no-content-type", mod(dref, lambda r: r["content"][0]["attachment"].pop("contentType")), "DocumentReference.content[0].attachment", "DocumentReference.content.attachment.contentType is required: minimum cardinality 1")

idr = {"resourceType": "Condition", "id": "idr-1",
       "extension": [ext_v("cn-report-card-type", valueCoding=coding("report-card-type", "初次报告")), ext_v("cn-case-classification", valueCoding=coding("case-classification", "确诊病例")),
                     ext_v("cn-patient-locality", valueCoding=coding("patient-locality", "本县区"))],
       "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
       "category": [{"coding": [coding("infectious-disease", "乙类")]}],
       "code": {"coding": [coding("infectious-disease", "2600", "肺结核"), {"system": ICDC, "code": "A15.000"}]},
       "subject": {"reference": "Patient/zhang-san"}, "onsetDateTime": "2026-11-20", "recordedDate": "2026-12-01", "recorder": {"reference": "Practitioner/wang-wu"}}
P = "CNInfectiousDiseaseReport"
valid(P, 1, idr)
valid(P, 2, mod(idr, lambda r: (r["extension"].__setitem__(0, ext_v("cn-report-card-type", valueCoding=coding("report-card-type", "订正报告"))), r["extension"].pop(2))))
valid(P, 3, mod(idr, lambda r: (r.update(code={"coding": [coding("infectious-disease", "3500", "流行性感冒")]}),
                                r["extension"].__setitem__(1, ext_v("cn-case-classification", valueCoding=coding("case-classification", "疑似病例"))))))
invalid(P, "no-card-type", mod(idr, lambda r: r["extension"].pop(0)), "Condition", "slice 'reportCardType' of Condition.extension: minimum cardinality 1, found 0")
invalid(P, "case-class", mod(idr, lambda r: r["extension"].__setitem__(1, ext_v("cn-case-classification", valueCoding=coding("case-classification", "急性")))),
        "Condition.extension[1].valueCoding", "not in the value set " + vs_url("case-classification"))
invalid(P, "no-onset", mod(idr, lambda r: r.pop("onsetDateTime")), "Condition", "Condition.onset[x] is required: minimum cardinality 1")
invalid(P, "not-notifiable", mod(idr, lambda r: r.update(code={"coding": [{"system": ICDC, "code": "A15.000"}]})), "Condition", "constraint cn-idr-1")

with open(os.path.join(EX, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(EXPECTED, f, ensure_ascii=False, indent=2, sort_keys=True)
    f.write("\n")
print(f"{len(EXPECTED)} invalid examples")

# ---------------------------------------------------------------- README
def md(s): return str(s).replace("|", "\\|")
lines = ["# profiles/cn/ — local implementation guide for Chinese health-information exchange", "",
 "Conformance resources as data, loaded by the registry at start (every `*.json` below this folder except `examples/`).",
 "**Generated** by `scripts/gen-cn-ig.py` (edit the tables there, then run `python3 scripts/gen-cn-ig.py`); the facts come",
 "from `../shared/reference/cn-interop.md` and, where named, the WS/T 500 / WS/T 846 samples of the `cn-hie` corpus.",
 f"Canonical base: `{BASE}`. Every resource is published with `status: draft`. `GET [base]/ImplementationGuide/cn` serves",
 "an ImplementationGuide generated from what the server has loaded.", "",
 "**Experimental** (`experimental: true`; on NamingSystems, which have no such element in R4, the R5 cross-version extension `extension-NamingSystem.experimental`) marks a resource resting on a",
 "fact the reference does not verify, or on a system URI of this guide's own; the reason is in the table's note column.", ""]
lines += ["## Profiles", "", "| profile | resource | base | status | experimental | what it requires |", "|---|---|---|---|---|---|"]
for i, p in PROFILES.items():
    lines.append(f"| `{i}` | {p['type']} | {p['baseDefinition'].rsplit('/', 1)[1]} | {p['status']} | {'yes' if p['experimental'] else 'no'} | {md(p['description'])} |")
lines += ["", "## Extensions", "", "| extension | title | context | status | experimental |", "|---|---|---|---|---|"]
for folder, r in written:
    if folder == "extensions":
        lines.append(f"| `{r['id']}` | {md(r['title'])} | {', '.join(c['expression'] for c in r['context'])} | {r['status']} | {'yes' if r['experimental'] else 'no'} |")
lines += ["", "## Code systems", "", "Each has a value set of all its codes at `…/ValueSet/<same id>`. `fragment`: only the codes the sources give are shipped",
          "(other codes are reported as not checkable, never as wrong); `not-present`: the system is known, its table is not shipped.", "",
          "| code system | title | OID (identifier) | content | codes | status | experimental | source / note |", "|---|---|---|---|---|---|---|---|"]
for i, r in CS.items():
    oid = r.get("identifier", [{}])[0].get("value", "—")
    lines.append(f"| `{i}` | {md(r['title'])} | {oid} | {r['content']} | {r.get('count', '—')} | {r['status']} | {'yes' if r['experimental'] else 'no'} | {md(r['description'].split('. ', 1)[1] if '. ' in r['description'] else '')} |")
lines += ["", "## Concept maps", "", "| concept map | from → to | status | experimental | note |", "|---|---|---|---|---|"]
for i, r in CM.items():
    lines.append(f"| `{i}` | {md(r['title'])} | {r['status']} | {'yes' if r['experimental'] else 'no'} | {md(r['description'].split('. ', 1)[1] if '. ' in r['description'] else '')} |")
lines += ["", "## Naming systems", "", "The canonicaliser (`src/identity/canonical.rs`) rewrites every listed URI of a NamingSystem to its preferred one on",
          "every write (configurable: `canonical-identifier-systems`).", "",
          "| naming system | number | preferred (canonical) | aliases | status | experimental | source / note |", "|---|---|---|---|---|---|---|"]
for (i, name, title, uids, source, exp, note) in NAMING:
    pref = [v for t, v, p in uids if p][0]
    aliases = [v if t == "uri" else "urn:oid:" + v for t, v, p in uids if not p and (v if t == "uri" else "urn:oid:" + v) != pref]
    lines.append(f"| `cn-{i}` | {md(title)} | `{pref}` | {', '.join('`%s`' % a for a in aliases) or '—'} | draft | {'yes' if exp else 'no'} | {md(source)}{'; ' + md(note) if note else ''} |")
lines += ["", "## Unverified facts kept (flagged experimental)", "",
 "- GB/T 2261.2 marital codes other than 20 (10 is also in the samples); ABO codes 1-4 and the Rh table id and codes 1/3 (1 and 2 are in the samples).",
 "- That the HL7 China 社保卡 OID and the WS 医保卡号 OID (1.15) name the same number; the OIDs of 病案号 (1.8 vs 1.13) and 门(急)诊号 (1.10 vs 1.11), where implementations differ: the alternative is deliberately not an alias.",
 "- The 预防接种 record fields (CNImmunization) and the 疫苗追溯码 system.",
 "- The LOINC answer codes in the ABO/Rh maps (LL2419-1, LA6576-8/LA6577-6) are not in the reference.",
 "- Disease-report tables (报卡类别, 病例分类, 病人属于, 人群分类) are named in the reference without codes: the code is the Chinese term.",
 "- System URIs under `" + BASE + "/sid/` are this guide's own (no OID in the reference): 电子健康卡, 医保电子凭证, 统一社会信用代码, 医疗机构登记号, 医师执业证号, setl_id, 追溯码.",
 "", "## Known gaps", "",
 "- 统一社会信用代码: the check-character invariants `cn-uscc-1`/`cn-uscc-2` follow GB 32100-2015 as we know it (not in the reference; checked against the standard's example 91350100M000100Y43).",
 "- GB 3304 ships only 01/HA; the 民族 format (01-56 or two capital letters) is checked by invariant `cn-eth-1` instead.",
 "- GB/T 2260, GB/T 6565, ICD-10 national clinical / 医保版 tables are not shipped (`not-present`).",
 "- The profiles repeat the extensions' value bindings on their slices, because the validator does not yet follow `type.profile` of an extension slice.",
 "- Validation issues name the element and the rule (constraint key, slice, cardinality, binding) but not the profile's URL in the message: the caller knows which profile it asked for.",
 "", "## Examples", "", "`examples/<profile>/valid-N.json` and `invalid-<what>.json`; `examples/expected.json` gives, for each invalid example,",
 "the profile, the element (FHIRPath) and the rule its one error must name (`tests/cn_profiles.rs` asserts exactly that).", ""]
with open(os.path.join(ROOT, "README.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
